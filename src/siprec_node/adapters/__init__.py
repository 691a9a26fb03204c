"""Bridges between layers: the SIP handler's CallStore over a SessionStore."""

from siprec_node.adapters.shared_call_store import SharedCallStore, to_call_data, to_session_state

__all__ = ["SharedCallStore", "to_call_data", "to_session_state"]
