"""Bridges between layers: the SIP handler's CallStore over a SessionStore."""
