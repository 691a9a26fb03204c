"""Process-level persistence faults: node restart, node death, store outage, graceful stop."""
