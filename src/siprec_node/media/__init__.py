"""RTP reception and recording: port allocation, receivers, timelines, finalisation."""
