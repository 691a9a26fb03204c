"""Errors of the recording domain, each carrying the SIP status code to answer with."""

from __future__ import annotations

ACCEPTED_BODY_TYPES = (
    "application/sdp, application/rs-metadata+xml, application/rs-metadata, multipart/mixed"
)


class SiprecError(Exception):
    """Base class: something in a request prevents recording it as sent."""

    status: int = 500
    reason_phrase: str = "Server Internal Error"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BodyError(SiprecError):
    """A body that cannot be split into its parts (broken multipart): answer 400."""

    status = 400
    reason_phrase = "Bad Request"


class UnsupportedBody(SiprecError):
    """A body type we cannot record from: answer 415 with :attr:`accept` in an Accept header."""

    status = 415
    reason_phrase = "Unsupported Media Type"

    def __init__(self, reason: str, accept: str = ACCEPTED_BODY_TYPES) -> None:
        super().__init__(reason)
        self.accept = accept


class MetadataError(SiprecError):
    """Recording metadata that is not well-formed XML, too large, or unsafe: answer 400."""

    status = 400
    reason_phrase = "Bad Request"


class MetadataNotWellFormed(MetadataError):
    """Recording metadata that is empty or not well-formed XML. The SIP layer records the call
    anyway (participants from From/To) and flags it ``metadata_unparsed``."""


class SdpError(SiprecError):
    """An SDP body that cannot be parsed at all: answer 400."""

    status = 400
    reason_phrase = "Bad Request"


class NotAcceptable(SiprecError):
    """An offer with no audio stream we can record: answer 488."""

    status = 488
    reason_phrase = "Not Acceptable Here"


class MetadataLimitExceeded(MetadataError):
    """Recording metadata with more elements or stream ids than the node accepts: answer 400."""
