"""SIP stack: sans-I/O messages, transactions, dialogs; asyncio transports; the SIPREC handler."""

from siprec_node.sip.call import CallData, CallStatus, CallStore, MemoryCallStore
from siprec_node.sip.handler import HandlerConfig, SipHandler

__all__ = ["CallData", "CallStatus", "CallStore", "HandlerConfig", "MemoryCallStore", "SipHandler"]
