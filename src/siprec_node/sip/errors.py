"""The one error type the SIP layer raises for bad input: it carries the status to answer with."""

from __future__ import annotations


class SipParseError(Exception):
    """Input that is not an acceptable SIP message.

    ``status`` is the response code a UAS answers with (400 malformed, 413 too large, 505 bad
    version, 416 bad URI scheme...); ``reason`` is a short, human-readable explanation that also
    goes into the response's reason phrase so that the SRC's logs say what was wrong.
    """

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason

    def __repr__(self) -> str:
        return f"SipParseError({self.reason!r}, status={self.status})"
