"""The recorder: the asyncio driver that runs the SIP call-control core against the media
engine, the call store and finalisation (``driver``), and what it needs around it."""

from siprec_node.recorder.config import HandlerConfig
from siprec_node.recorder.driver import CallDriver, local_address_towards

__all__ = ["CallDriver", "HandlerConfig", "local_address_towards"]
