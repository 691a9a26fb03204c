"""The recording domain (no I/O): RFC 7865 metadata, multipart bodies, SDP and the SRS answer."""
