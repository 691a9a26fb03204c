"""A test SRC that also reads the requests the node sends it (OPTIONS probes, BYEs) and answers
them as a test tells it to; built on the hand-written client of ``media/src_client.py``."""

from __future__ import annotations

import re
import time

from tests.integration.media.src_client import METADATA, SrcCall


class ProbedSrc(SrcCall):
    """An SRC that also reads the requests the node sends it, and answers them as told."""

    def next_request(self, timeout: float) -> tuple[str, float] | None:
        """The next request from the node (its text and arrival time), or None by ``timeout``;
        responses arriving meanwhile are skipped."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sip.settimeout(left)
            try:
                data = self.sip.recv(65535).decode()
            except TimeoutError:
                return None
            if not data.startswith("SIP/2.0"):
                return data, time.monotonic()
        return None

    def respond(self, request: str, status: int, reason: str = "Whatever") -> None:
        head = request.split("\r\n\r\n", 1)[0].split("\r\n")
        keep = [line for line in head[1:] if re.match(r"(?i)(via|from|to|call-id|cseq)\s*:", line)]
        text = "\r\n".join([f"SIP/2.0 {status} {reason}", *keep, "Content-Length: 0"])
        self.sip.sendto((text + "\r\n\r\n").encode(), ("127.0.0.1", self.node_port))

    def offer(self) -> tuple[int, str]:
        """Send the SIPREC INVITE and return its final status and text, whatever it is (the
        ACK of a 200 is sent; a non-2xx is acknowledged by the transaction layer's ACK)."""
        body = (
            "--b1\nContent-Type: application/sdp\n\n"
            + self.sdp()
            + "\n--b1\nContent-Type: application/rs-metadata+xml\n"
            "Content-Disposition: recording-session\n\n" + METADATA + "\n--b1--\n"
        )
        request = self._request(
            "INVITE", body, "multipart/mixed;boundary=b1", extra="Require: siprec"
        )
        return self._final(request)


def method_of(request: str) -> str:
    """The method of a request's text."""
    return request.split(" ", 1)[0]
