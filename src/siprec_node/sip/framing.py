"""Cutting a TCP/TLS byte stream into SIP messages and keep-alives, sans-I/O.

A :class:`StreamFramer` is fed the bytes of one connection as they arrive and returns what they
complete: messages (delimited by their header section and Content-Length, RFC 3261 §18.3),
keep-alive pings (a double CRLF, RFC 5626 §3.5.1, to be answered with a single CRLF), pongs (a
single CRLF, ignored) and framing errors. After an error the stream can no longer be cut into
messages, so the connection must be closed; the error carries what was buffered so that the
transport can answer the broken request first (see
:func:`~siprec_node.sip.message.error_response_for`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from siprec_node.sip.errors import SipParseError
from siprec_node.sip.message import DEFAULT_MAX_SIZE, HEADER_END, head_content_length

_PING = re.compile(rb"\r?\n\r?\n")
_PONG = re.compile(rb"\r?\n")
_PING_FORMS = (b"\r\n\r\n", b"\r\n\n", b"\n\r\n", b"\n\n")


@dataclass(frozen=True, slots=True)
class FramedMessage:
    """One complete message, to be parsed with ``parse_message(data, stream=True)``."""

    data: bytes


@dataclass(frozen=True, slots=True)
class KeepAlivePing:
    """A double CRLF between messages: the peer checks the connection; send :attr:`REPLY`."""

    REPLY: ClassVar[bytes] = b"\r\n"


@dataclass(frozen=True, slots=True)
class KeepAlivePong:
    """A single CRLF between messages (a pong, or a stray line end before a message): ignore."""


@dataclass(frozen=True, slots=True)
class FramingError:
    """The stream cannot be cut into messages any more.

    ``data`` is what was buffered of the broken message (at most ``max_size`` bytes), for an
    error response; ``close_connection`` is always true: framing is lost, nothing the peer sends
    afterwards can be trusted to start a message, so the connection must be closed.
    """

    error: SipParseError
    data: bytes
    close_connection: bool = True


FramedItem = FramedMessage | KeepAlivePing | KeepAlivePong | FramingError


class StreamFramer:
    """Cuts one connection's byte stream into :data:`FramedItem` s.

    Copes with data arriving a byte at a time or many messages per chunk, and with header
    sections ending in bare LF. Work is linear in the bytes fed: the search for the end of a
    header section resumes where the previous one stopped, and once the head is known the body
    is waited for by length alone.

    Content-Length is mandatory on streams (RFC 3261 §20.14): a message without one is a framing
    error, as are bad or conflicting values and messages larger than ``max_size`` bytes.
    """

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.max_size = max_size
        self._buffer = bytearray()
        self._scan = 0  # where the search for the end of the current header section resumes
        self._length: int | None = None  # size of the current message, once its head is known
        self._failed = False

    @property
    def failed(self) -> bool:
        """Whether a framing error was reported (every later :meth:`feed` returns nothing)."""
        return self._failed

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as an item."""
        return len(self._buffer)

    @property
    def message_pending(self) -> bool:
        """Whether part of a message (not just line ends between messages) is buffered."""
        buf = self._buffer
        return bool(buf) and (self._length is not None or buf[0] not in b"\r\n")

    def feed(self, data: bytes | bytearray | memoryview) -> list[FramedItem]:
        """Add received bytes; return the items they complete, in stream order."""
        if self._failed:
            return []
        buf = self._buffer
        buf += data
        items: list[FramedItem] = []
        pos = 0
        while pos < len(buf):
            if self._length is None and buf[pos] in b"\r\n":  # between messages
                step = self._keep_alive(buf, pos, items)
                if step is None:
                    break
                pos = step
                continue
            step = self._message(buf, pos, items)
            if step is None:
                break
            pos = step
        if self._failed:
            buf.clear()
            self._scan = 0
        else:
            del buf[:pos]
            self._scan = max(0, self._scan - pos)
        return items

    def _keep_alive(self, buf: bytearray, pos: int, items: list[FramedItem]) -> int | None:
        """Consume line ends between messages; ``None`` while a ping may still be arriving."""
        match = _PING.match(buf, pos)
        if match is not None:
            items.append(KeepAlivePing())
            return match.end()
        rest = bytes(buf[pos : pos + 4])
        if any(form.startswith(rest) for form in _PING_FORMS):
            return None
        match = _PONG.match(buf, pos)
        if match is not None:
            items.append(KeepAlivePong())
            return match.end()
        return pos + 1  # a lone CR before a message: noise

    def _message(self, buf: bytearray, pos: int, items: list[FramedItem]) -> int | None:
        """Frame the message starting at ``pos``; ``None`` while it is incomplete."""
        if self._length is None:
            end = HEADER_END.search(buf, max(pos, self._scan))
            if end is None:
                if len(buf) - pos > self.max_size:
                    self._fail(
                        buf, pos, items, f"header section larger than {self.max_size} bytes", 413
                    )
                    return None
                self._scan = max(pos, len(buf) - 2)  # a terminator may straddle two feeds
                return None
            try:
                body_length = head_content_length(bytes(buf[pos : end.start()]))
            except SipParseError as exc:
                self._fail(buf, pos, items, exc.reason, 400)
                return None
            if body_length is None:
                self._fail(buf, pos, items, "missing Content-Length on a stream", 400)
                return None
            length = end.end() - pos + body_length
            if length > self.max_size:
                reason = f"message of {length} bytes larger than {self.max_size}"
                self._fail(buf, pos, items, reason, 413)
                return None
            self._length = length
        if len(buf) - pos < self._length:
            return None
        end_pos = pos + self._length
        items.append(FramedMessage(bytes(buf[pos:end_pos])))
        self._length = None
        self._scan = end_pos
        return end_pos

    def _fail(
        self, buf: bytearray, pos: int, items: list[FramedItem], reason: str, status: int
    ) -> None:
        data = bytes(buf[pos : pos + self.max_size])
        items.append(FramingError(SipParseError(reason, status), data))
        self._failed = True
        return None
