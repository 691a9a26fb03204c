"""Session persistence: SessionState, stores (memory, Redis) and the SessionManager."""
