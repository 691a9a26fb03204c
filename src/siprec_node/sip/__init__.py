"""SIP stack: sans-I/O messages, transactions, dialogs and call control; asyncio transports."""

from siprec_node.sip.call import CallData, CallStatus, CallStore, MemoryCallStore

__all__ = ["CallData", "CallStatus", "CallStore", "MemoryCallStore"]
