"""The media side of the calls the node answers: open, pause, resume and close their streams.

Keeps, per call, which negotiated streams are being recorded and whether each is paused (by the
SDP — ``a=inactive`` or ``c=0.0.0.0`` — or by an operator), and turns every change of that into
requests to the media engine. The engine records into the call's parts folder (``FORMAT.md``),
aligned on the call's media epoch; a restarted node re-opens the same streams into the same files.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import shutil
import time
from pathlib import Path
from typing import Any

import structlog

from siprec_node.media.engine import MediaEngine, StreamSpec
from siprec_node.media.rtp_ports import RtpPorts
from siprec_node.sip.media_state import MediaState
from siprec_node.siprec.sdp_answer import NegotiatedStream

log = structlog.get_logger("siprec_node.recorder.call_media")


MAX_SOURCES = 8
"""Addresses one stream accepts at most (the C receive path's limit): the newest are kept."""
SOURCE_CHECKS = ("strict", "signalling", "any")


class MediaOpenFailed(Exception):
    """Some streams could not be opened (the others are open and recorded in the state)."""


@functools.lru_cache(maxsize=4096)
def _usable(address: str | None) -> str | None:
    """An IP literal that names a sender (not a host name, not ``0.0.0.0``/``::`` of a hold)."""
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return None
    if ip.is_unspecified:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.compressed


class CallMedia:
    """Drives the media engine for the handler's calls.

    ``source_check`` (``media.source_check``) decides whose packets a stream accepts:
    ``strict`` the address its SDP names (``c=``), ``signalling`` that or the SIP peer's
    address, ``any`` everyone. Ports are not checked (SBCs send from other ports than the
    ``m=`` port, and keep sending from the old port after a re-INVITE moved it); addresses a
    stream was given earlier in the call stay allowed (RTP keeps coming from the old source
    for a while after a re-INVITE moves the media).
    """

    def __init__(
        self, ports: RtpPorts, engine: MediaEngine, source_check: str = "signalling"
    ) -> None:
        if source_check not in SOURCE_CHECKS:
            raise ValueError(f"source_check must be one of {', '.join(SOURCE_CHECKS)}")
        self.ports = ports
        self.engine = engine
        self._formats: dict[str, dict[int, tuple[Any, ...]]] = {}
        """What each open stream's engine was last told it may carry (payload types), by call
        and stream index, to tell it again only when a re-INVITE changed them; dropped at close
        (by call: no scan over every open stream)."""
        self.source_check = source_check

    def sources_for(
        self, stream: NegotiatedStream, peer: str | None, earlier: list[str] | None = None
    ) -> list[str] | None:
        """The addresses ``stream`` takes packets from (None: any)."""
        if self.source_check == "any":
            return None
        named = _usable(stream.remote_address)
        signalling = _usable(peer)
        wanted: list[str] = []
        if named is not None:
            wanted.append(named)
        if (
            signalling is not None
            and signalling != named
            and (self.source_check == "signalling" or named is None)
        ):
            # strict with an SDP naming no address (a host name, a hold): the SIP peer is the
            # best evidence of who the SRC is
            wanted.append(signalling)
        for address in earlier or ():
            if address not in wanted:
                wanted.append(address)
        return wanted[:MAX_SOURCES]

    async def sync(
        self,
        session_id: str,
        state: MediaState,
        streams: tuple[NegotiatedStream, ...],
        at: float | None = None,
        *,
        peer: str | None = None,
        reopen: bool = False,
    ) -> list[str]:
        """Make the engine match ``streams``: open new ones, pause and resume the others, and
        pass on the addresses each may be sent from (``peer``: the SIP peer's address).

        Returns what changed, for logs. A refused stream that was open stays open and paused
        (its port stays the call's; the gap is silence). Streams that fail to open raise
        :class:`MediaOpenFailed` after the others were opened (they are in ``state.open``, so
        that closing the call closes them). ``reopen`` opens every stream again (restart
        recovery, worker restart), continuing its files.
        """
        at = time.time() if at is None else at
        state.engaged = True
        async with _lock(state):
            if state.closed:
                return []
            if reopen:
                state.open.clear()
                self._forget(session_id)
            return await self._sync(session_id, state, streams, at, peer)

    async def _sync(
        self,
        session_id: str,
        state: MediaState,
        streams: tuple[NegotiatedStream, ...],
        at: float,
        peer: str | None,
    ) -> list[str]:
        changes: list[str] = []
        # New streams open together, so that no leg waits for another's round trip.
        opening = []
        failed: list[str] = []
        for stream in streams:
            if stream.index in state.open or not stream.accepted or stream.port == 0:
                continue
            if not self.ports.holds(stream.port):
                log.warning("stream_port_not_held", session_id=session_id, port=stream.port)
                continue
            try:
                rtp, rtcp = self.ports.take(stream.port)  # bound again after a worker died
            except OSError as exc:
                failed.append(f"stream {stream.index}: {exc!r}")
                continue
            sources = self.sources_for(stream, peer, state.sources.get(stream.index))
            spec = StreamSpec(
                session_id=session_id,
                index=stream.index,
                negotiated=stream.to_dict(),
                parts_dir=state.parts,
                epoch=state.epoch,
                sources=sources,
            )
            opening.append((stream.index, sources, self.engine.open_stream(spec, rtp, rtcp)))
        if not opening and not state.open:
            # An answered call with no stream to record still gets its (empty) parts folder,
            # for finalisation; an opening stream's recorder makes it, in the media worker:
            # a mkdir of the day and parts folders per call is not the event loop's to make.
            Path(state.parts).mkdir(parents=True, exist_ok=True)
        results = await asyncio.gather(*(job for _, _, job in opening), return_exceptions=True)
        for (index, sources, _), result in zip(opening, results, strict=True):
            if isinstance(result, BaseException):
                failed.append(f"stream {index}: {result!r}")
                continue
            state.open[index] = False
            if sources is not None:
                state.sources[index] = sources
            changes.append(f"stream {index} open")
        opened = {index for index, _, _ in opening}
        for stream in streams:
            if stream.index not in state.open:
                continue
            carried = _carried(stream)
            formats = self._formats.setdefault(session_id, {})
            known = formats.get(stream.index)
            formats[stream.index] = carried
            if stream.accepted and known is not None and carried != known:
                spec = StreamSpec(
                    session_id=session_id,
                    index=stream.index,
                    negotiated=stream.to_dict(),
                    parts_dir=state.parts,
                    epoch=state.epoch,
                )
                await self.engine.update_stream(spec)
                changes.append(f"stream {stream.index} formats {list(carried[0])}")
            if stream.index not in opened and self.source_check != "any" and stream.accepted:
                sources = self.sources_for(stream, peer, state.sources.get(stream.index))
                if sources != state.sources.get(stream.index):
                    await self.engine.set_sources(session_id, stream.index, sources)
                    state.sources[stream.index] = sources or []
                    changes.append(f"stream {stream.index} sources {sources}")
            wanted_pause = state.operator_paused or stream.paused or not stream.accepted
            if state.open[stream.index] != wanted_pause:
                if wanted_pause:
                    await self.engine.pause(session_id, stream.index, at)
                else:
                    await self.engine.resume(session_id, stream.index, at)
                state.open[stream.index] = wanted_pause
                changes.append(f"stream {stream.index} {'paused' if wanted_pause else 'resumed'}")
        if failed:
            raise MediaOpenFailed("; ".join(failed))
        return changes

    async def reopen(
        self,
        session_id: str,
        state: MediaState,
        streams: tuple[NegotiatedStream, ...],
        *,
        peer: str | None = None,
    ) -> None:
        """Open every stream again, continuing its files (restart recovery, worker restart)."""
        await self.sync(session_id, state, streams, peer=peer, reopen=True)

    async def close(
        self, session_id: str, state: MediaState | None = None, at: float | None = None
    ) -> dict[int, dict[str, Any]]:
        """Close the call's streams (files closed); returns their statistics.

        With ``state``: after any open in flight for the call has finished, and nothing is
        opened for it afterwards. Every stream the engine holds for the call is closed, whether
        or not its open was reported as done.
        """
        at = time.time() if at is None else at
        self._forget(session_id)
        if state is None:
            return await self.engine.close_call(session_id, at)
        state.closed = True
        async with _lock(state):
            return await self.engine.close_call(session_id, at)

    def _forget(self, session_id: str) -> None:
        self._formats.pop(session_id, None)

    @staticmethod
    def discard(state: MediaState) -> bool:
        """Remove the parts folder of a call that never got answered (nothing to finalise)."""
        parts = Path(state.parts)
        if not parts.is_dir():
            return False
        shutil.rmtree(parts, ignore_errors=True)
        return True


def _lock(state: MediaState) -> asyncio.Lock:
    """The lock ordering the engine requests of one call (made on first use)."""
    if state.lock is None:
        state.lock = asyncio.Lock()
    lock: asyncio.Lock = state.lock
    return lock


def _carried(stream: NegotiatedStream) -> tuple[Any, ...]:
    """The payload types a negotiated stream may carry (audio, telephone-event, CN)."""
    return (
        tuple((f.payload_type, f.name, f.clock_rate) for f in stream.formats),
        tuple(stream.telephone_event_pts),
        tuple(stream.comfort_noise_pts),
    )
