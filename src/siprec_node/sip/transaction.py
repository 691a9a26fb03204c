"""RFC 3261 transactions (with RFC 6026's Accepted state), sans-I/O.

A :class:`TransactionLayer` owns every server transaction and every client non-INVITE
transaction of a node. It never touches a socket or a clock: the caller feeds it requests,
responses and the current time (``now``, seconds as a float) and asks it what to send
(:meth:`~TransactionLayer.datagrams_to_send`) and when to wake it up
(:meth:`~TransactionLayer.next_timer`, then :meth:`~TransactionLayer.handle_timer`).
What the transaction user (TU, the SIP handler) must act on comes back as events.

Design choices:

* Retransmitted requests never reach the TU: they are absorbed and answered with the last
  response sent, so the handler sees every request once.
* The 2xx to an INVITE is retransmitted by the layer (RFC 3261 §13.3.1.4, on the Timer G schedule)
  while the transaction sits in RFC 6026's Accepted state, until an ACK matches it or Timer L
  fires (:class:`AckTimeout`: the TU tears the dialog down).
* ``100 Trying`` is sent automatically when the TU has not answered an INVITE within
  ``trying_delay`` (200 ms, §17.2.1); a TU that answers 100 at once simply makes it a no-op.
* CANCEL gets its own non-INVITE server transaction and is reported with the INVITE transaction
  it matches (§9.2); the TU answers both (200 to the CANCEL, 487 to the INVITE if unanswered).
* On receipt, the topmost Via is stamped with ``received``/``rport`` (§18.2.1, RFC 3581), so
  responses built from the request carry what :func:`response_destination` needs.

The state tables the transactions follow are in :mod:`siprec_node.sip.transaction_table`.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import ipaddress
import itertools
import secrets
from dataclasses import dataclass, field, replace
from typing import Literal, Union

from siprec_node.sip.message import Headers, SipRequest, SipResponse, Via, make_response
from siprec_node.sip.transaction_table import (
    CLIENT_RECEIVE,
    SERVER_ACK,
    SERVER_RETRANSMISSION,
    SERVER_SEND,
    Do,
    Kind,
    TransactionState,
    class_of,
)
from siprec_node.sip.uri import parse_decimal

MAGIC_COOKIE = "z9hG4bK"
"""Branch prefix of RFC 3261 transaction identifiers (anything else is matched the 2543 way)."""

DEFAULT_TRYING_DELAY = 0.2

Transport = Literal["udp", "tcp", "tls"]
_TRANSPORTS = frozenset({"udp", "tcp", "tls"})


# --------------------------------------------------------------------------------------------
# Value types


@dataclass(frozen=True)
class Address:
    """Where a message came from or goes to.

    ``connection_id`` is an opaque handle of the stream connection (TCP/TLS) a request arrived on,
    so that responses go back over the same connection; ``None`` for UDP or "open one".
    """

    transport: Transport
    host: str
    port: int
    connection_id: int | None = None

    def __post_init__(self) -> None:
        if self.transport not in _TRANSPORTS:
            raise ValueError(f"unknown transport {self.transport!r} (udp, tcp or tls)")

    @property
    def reliable(self) -> bool:
        """True for stream transports, which need no retransmissions."""
        return self.transport != "udp"


@dataclass(frozen=True)
class TimerConfig:
    """RFC 3261 timer values in seconds (§17.1.1.1, table 4)."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    @property
    def timeout(self) -> float:
        """``64*T1``: Timers B, F, H, J (unreliable) and L."""
        return 64 * self.t1


@dataclass(frozen=True)
class TransactionKey:
    """Identity of a transaction: method, branch and sent-by (§17.2.3).

    For requests whose branch lacks the ``z9hG4bK`` cookie, ``branch`` holds a digest of the
    RFC 2543 matching fields (Request-URI, tags, Call-ID, CSeq number, top Via) instead.
    ACK never has a key of its own: it belongs to the INVITE transaction.
    """

    method: str
    branch: str
    sent_by: str


@dataclass(frozen=True)
class Outgoing:
    """Bytes to send and where to."""

    data: bytes
    destination: Address


class TransactionError(Exception):
    """An illegal action of the TU (a second final response, an unknown transaction...)."""


class UnknownTransaction(TransactionError, KeyError):
    """The key names no live transaction (never created, or already terminated)."""

    def __str__(self) -> str:
        return Exception.__str__(self)


# --------------------------------------------------------------------------------------------
# Events


@dataclass(frozen=True)
class RequestReceived:
    """A new request (not a retransmission, not ACK or CANCEL) for the TU to answer."""

    request: SipRequest
    key: TransactionKey
    source: Address


@dataclass(frozen=True)
class CancelReceived:
    """A new CANCEL; ``invite_key`` is the INVITE transaction it cancels (None: answer 481).

    The layer answers neither: the TU sends 200 on ``key`` and, if the INVITE has no final
    response yet (:meth:`TransactionLayer.get_state` is Proceeding), 487 on ``invite_key``.
    """

    cancel: SipRequest
    key: TransactionKey
    invite_key: TransactionKey | None
    source: Address


@dataclass(frozen=True)
class AckReceived:
    """An ACK for a 2xx, or an ACK that matches no transaction, for the TU/dialog.

    ``key`` is the Accepted INVITE transaction it acknowledged (retransmission of the 2xx
    stopped), ``None`` when it matched none. ``lenient`` says the match needed the INTEROP
    tolerance (no To tag, another CSeq number or From display name): log it, accept it.
    Duplicate ACKs of an already acknowledged 2xx are absorbed while the transaction lives.
    """

    ack: SipRequest
    source: Address
    key: TransactionKey | None = None
    lenient: bool = False


@dataclass(frozen=True)
class AckTimeout:
    """No ACK came for the 2xx within ``64*T1`` (Timer L): tear the dialog down and log."""

    key: TransactionKey
    response: SipResponse


@dataclass(frozen=True)
class TransactionTimeout:
    """No ACK came for a non-2xx final response to an INVITE within Timer H."""

    key: TransactionKey
    response: SipResponse


@dataclass(frozen=True)
class ResponseReceived:
    """A response (provisional or final) to a request the node sent; duplicates are absorbed."""

    key: TransactionKey
    response: SipResponse


@dataclass(frozen=True)
class ClientTimeout:
    """No final response came for a request the node sent (Timer F): treat as 408."""

    key: TransactionKey
    request: SipRequest


Event = Union[  # noqa: UP007 - a runtime alias, usable in isinstance
    RequestReceived,
    CancelReceived,
    AckReceived,
    AckTimeout,
    TransactionTimeout,
    ResponseReceived,
    ClientTimeout,
]


# --------------------------------------------------------------------------------------------
# Helpers


def new_branch() -> str:
    """A fresh RFC 3261 branch (``z9hG4bK`` + 96 random bits)."""
    return MAGIC_COOKIE + secrets.token_hex(12)


def new_tag() -> str:
    """A fresh From/To tag (64 random bits)."""
    return secrets.token_hex(8)


def new_call_id(host: str | None = None) -> str:
    """A fresh Call-ID (128 random bits), ``@host`` appended when given."""
    value = secrets.token_hex(16)
    return f"{value}@{host}" if host else value


@functools.lru_cache(maxsize=4096)
def _same_host(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a.strip("[]")) == ipaddress.ip_address(b.strip("[]"))
    except ValueError:
        return a.lower() == b.lower()


def stamp_via(request: SipRequest, source: Address) -> SipRequest:
    """Add ``received`` (and fill ``rport``) to the topmost Via per §18.2.1 and RFC 3581.

    ``received`` is added when the sent-by host differs from the source address, or always
    when the client asked for ``rport``. Returns ``request`` itself when nothing changes.
    """
    vias = request.headers.get_all("Via")
    top = Via.parse(vias[0])
    params = dict(top.params)
    if "rport" in params:
        params["rport"] = str(source.port)
        params["received"] = source.host
    elif not _same_host(top.host, source.host):
        params["received"] = source.host
    if params == top.params:
        return request
    stamped = Via(top.transport, top.host, top.port, params)
    return replace(request, headers=request.headers.replace("Via", str(stamped), *vias[1:]))


def response_destination(via: Via, source: Address) -> Address:
    """Where a response goes, from its topmost Via and the request's source (§18.2.2).

    * Stream transports: back to the source over the same connection (``connection_id``); if it
      has closed, the transport layer opens a new one to the same address.
    * ``maddr``: to that address, at the sent-by port (default 5060).
    * ``rport`` (RFC 3581): to ``received`` (or the source host) at the ``rport`` value (or the
      source port) - the NAT-friendly choice.
    * ``received``: to that address at the sent-by port (default 5060).
    * Otherwise: to the sent-by host and port.
    """
    if source.reliable:
        return source
    params = via.params
    port = via.port or 5060
    maddr = params.get("maddr")
    if maddr:
        return Address("udp", maddr, port)
    if "rport" in params:
        rport = params.get("rport")
        host = params.get("received") or source.host
        number = parse_decimal(rport, max_digits=5) if rport else None
        return Address("udp", host, number if number and number <= 65535 else source.port)
    received = params.get("received")
    if received:
        return Address("udp", received, port)
    return Address("udp", via.host, port)


def _sent_by(via: Via) -> str:
    port = via.port or (5061 if via.transport == "TLS" else 5060)
    host = via.host.lower()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _legacy_branch(request: SipRequest, to_tag: str | None) -> str:
    """A digest of the RFC 2543 matching fields (§17.2.3), standing in for a branch."""
    via = request.top_via
    params = sorted((k, v) for k, v in via.params.items() if k not in ("received", "rport"))
    via_id = f"{via.transport} {_sent_by(via)} {params}"
    fields = (
        request.uri,
        request.from_.tag or "",
        to_tag or "",
        request.call_id,
        str(request.cseq.number),
        via_id,
    )
    digest = hashlib.sha256("\x00".join(fields).encode()).hexdigest()[:32]
    return f"rfc2543-{digest}"


def transaction_key(
    request: SipRequest, method: str | None = None, *, to_tag: str | None = ""
) -> TransactionKey:
    """The key of the transaction ``request`` belongs to (``method`` overrides, e.g. INVITE
    for an ACK or the CANCEL's target). ``to_tag`` overrides the To tag in 2543 matching."""
    via = request.top_via
    branch = via.branch
    if not (branch and branch.startswith(MAGIC_COOKIE)):
        branch = _legacy_branch(request, request.to.tag if to_tag == "" else to_tag)
    return TransactionKey(method or request.method, branch, _sent_by(via))


# --------------------------------------------------------------------------------------------
# Transactions (internal, mutable); their state tables are in transaction_table.py

S = TransactionState
_INV, _NON = Kind.INVITE, Kind.NON_INVITE

_MATCHING_HEADERS = frozenset({"via", "from", "to", "call-id", "cseq"})


def _answered(request: SipRequest) -> SipRequest:
    """What a transaction needs of its request once the final response is sent: the fields
    that match retransmissions and ACKs. The body and other headers (up to
    ``sip.max_message_size`` each) must not stay in memory for Timer J's 32 s."""
    kept = tuple((n, v) for n, v in request.headers if n.lower() in _MATCHING_HEADERS)
    if not request.body and len(kept) == len(request.headers):
        return request
    return replace(request, headers=Headers(kept), body=b"")


@dataclass(eq=False)
class _Transaction:
    key: TransactionKey
    request: SipRequest
    peer: Address
    state: S
    timers: dict[str, float] = field(default_factory=dict)
    interval: float = 0.0  # current retransmission interval
    data: bytes = field(default=b"", repr=False)  # the last message sent, serialized once
    destination: Address | None = None


@dataclass(eq=False)
class _ServerTransaction(_Transaction):
    kind: Kind = _NON
    response: SipResponse | None = None
    acked: bool = False
    ack_index: tuple[str, str | None] | None = None
    to_tag: str | None = None  # of the 2xx, for ACK matching


@dataclass(eq=False)
class _ClientTransaction(_Transaction):
    pass


# --------------------------------------------------------------------------------------------
# The layer


class TransactionLayer:
    """Every server transaction and client non-INVITE transaction of a node.

    Feed it :meth:`receive_request`, :meth:`receive_response`, :meth:`handle_timer`; drive it
    with :meth:`send_response`, :meth:`send_request`, :meth:`ack_received`; drain
    :meth:`datagrams_to_send` after each call and sleep until :meth:`next_timer`.
    Terminated transactions are removed at once (``len(layer)`` counts the live ones). A server
    transaction without a final response has no timer (§17.2): the TU must answer every
    :class:`RequestReceived` and :class:`CancelReceived`, or it stays in the table.
    """

    def __init__(
        self,
        timers: TimerConfig | None = None,
        *,
        trying_delay: float | None = DEFAULT_TRYING_DELAY,
    ) -> None:
        self.timers = timers or TimerConfig()
        self.trying_delay = trying_delay
        self._server: dict[TransactionKey, _ServerTransaction] = {}
        self._client: dict[tuple[str, str], _ClientTransaction] = {}
        # Accepted INVITE transactions by (Call-ID, From tag): ACKs for a 2xx have their own branch.
        self._accepted: dict[tuple[str, str | None], set[TransactionKey]] = {}
        self._heap: list[tuple[float, int, _Transaction, str]] = []
        self._seq = itertools.count()
        self._outgoing: list[Outgoing] = []

    # ---- introspection

    def __len__(self) -> int:
        return len(self._server) + len(self._client)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, TransactionKey):
            return False
        return key in self._server or (key.branch, key.method) in self._client

    @property
    def pending_requests(self) -> int:
        """Client transactions still waiting for their final response."""
        return sum(1 for t in self._client.values() if t.state in (S.TRYING, S.PROCEEDING))

    def get_state(self, key: TransactionKey) -> TransactionState | None:
        """The state of a live transaction, ``None`` when it no longer exists."""
        txn = self._server.get(key) or self._client.get((key.branch, key.method))
        return txn.state if txn else None

    def get_request(self, key: TransactionKey) -> SipRequest:
        """The request that created a live transaction (e.g. the INVITE to answer 487 to)."""
        txn = self._server.get(key) or self._client.get((key.branch, key.method))
        if txn is None:
            raise UnknownTransaction(f"no transaction {key}")
        return txn.request

    # ---- output

    def datagrams_to_send(self) -> list[Outgoing]:
        """Everything queued for sending since the last call (drained)."""
        out, self._outgoing = self._outgoing, []
        return out

    def next_timer(self) -> float | None:
        """The earliest deadline at which :meth:`handle_timer` must be called, if any."""
        heap = self._heap
        while heap:
            deadline, _, txn, name = heap[0]
            if txn.timers.get(name) == deadline:
                return deadline
            heapq.heappop(heap)  # stale: cancelled, rescheduled or terminated
        return None

    def handle_timer(self, now: float) -> list[Event]:
        """Fire every timer due at ``now``."""
        events: list[Event] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, txn, name = heapq.heappop(heap)
            if txn.timers.get(name) != deadline:
                continue
            del txn.timers[name]
            if isinstance(txn, _ServerTransaction):
                self._fire_server(txn, name, now, events)
            else:
                assert isinstance(txn, _ClientTransaction)
                self._fire_client(txn, name, now, events)
        return events

    # ---- server side: input

    def receive_request(self, request: SipRequest, source: Address, now: float) -> list[Event]:
        """A request from the network: new ones become events, retransmissions are absorbed."""
        if request.method == "ACK":
            return self._receive_ack(request, source, now)
        key = transaction_key(request)
        txn = self._server.get(key)
        if txn is not None:
            action = SERVER_RETRANSMISSION[(txn.kind, txn.state)]
            if action is Do.RESEND or (action is Do.RESEND_UNACKED and not txn.acked):
                self._resend(txn)
            return []
        stamped = stamp_via(request, source)
        if request.method == "INVITE":
            txn = _ServerTransaction(key, stamped, source, S.PROCEEDING, kind=_INV)
            if self.trying_delay is not None:
                self._set_timer(txn, "trying", now + self.trying_delay)
        else:
            txn = _ServerTransaction(key, stamped, source, S.TRYING, kind=_NON)
        self._server[key] = txn
        if request.method == "CANCEL":
            invite = self._find_invite(request)
            return [CancelReceived(stamped, key, invite.key if invite else None, source)]
        return [RequestReceived(stamped, key, source)]

    def _find_invite(self, request: SipRequest) -> _ServerTransaction | None:
        """The INVITE server transaction an ACK or CANCEL belongs to (§17.2.3, §9.2)."""
        branch = request.top_via.branch
        if branch and branch.startswith(MAGIC_COOKIE):
            return self._server.get(transaction_key(request, "INVITE"))
        # RFC 2543: an ACK carries the To tag of the response; the INVITE may have had none.
        for to_tag in dict.fromkeys((request.to.tag, None)):
            txn = self._server.get(transaction_key(request, "INVITE", to_tag=to_tag))
            if txn is not None:
                return txn
        return None

    def _receive_ack(self, ack: SipRequest, source: Address, now: float) -> list[Event]:
        txn = self._find_invite(ack)
        lenient = False
        if txn is None:
            match = self._match_2xx_ack(ack)
            if match is None:
                return [AckReceived(stamp_via(ack, source), source)]
            txn, lenient = match
        state, action = SERVER_ACK[txn.state]
        if txn.state is S.COMPLETED:
            self._enter(txn, state, now)
        if action is Do.PASS and not txn.acked:
            txn.acked = True
            self._cancel_timer(txn, "G")
            return [AckReceived(stamp_via(ack, source), source, txn.key, lenient)]
        return []

    def _match_2xx_ack(self, ack: SipRequest) -> tuple[_ServerTransaction, bool] | None:
        """Match an ACK to an Accepted INVITE by (Call-ID, CSeq number, From tag).

        INTEROP: with no candidate of the same CSeq number, a single candidate with the same
        Call-ID and From tag still matches (leniently); an ACK without a To tag matches too,
        and a different From display name is ignored. Ambiguity matches nothing.
        """
        from_ = ack.from_
        keys = self._accepted.get((ack.call_id, from_.tag), ())
        candidates = [self._server[k] for k in keys]
        to_tag = ack.to.tag
        if to_tag is not None:
            candidates = [t for t in candidates if t.to_tag == to_tag]
        number = ack.cseq.number
        exact = [t for t in candidates if t.request.cseq.number == number]
        if len(exact) == 1:
            txn = exact[0]
            lenient = to_tag is None or txn.request.from_.display != from_.display
            return txn, lenient
        if len(candidates) == 1 and not exact:
            return candidates[0], True
        return None

    # ---- server side: the TU's actions

    def send_response(self, key: TransactionKey, response: SipResponse, now: float) -> None:
        """Send ``response`` on server transaction ``key`` (queued for :meth:`datagrams_to_send`).

        Raises :class:`TransactionError` when the state forbids it (e.g. a second final response)
        and :class:`UnknownTransaction` when the transaction is gone.
        """
        txn = self._server.get(key)
        if txn is None:
            raise UnknownTransaction(f"no server transaction {key}")
        if response.cseq.method != txn.request.method:
            raise TransactionError(
                f"response to {response.cseq.method} sent on a {txn.request.method} transaction"
            )
        new_state = SERVER_SEND.get((txn.kind, txn.state, class_of(response.status)))
        if new_state is None:
            raise TransactionError(
                f"cannot send {response.status} on {txn.request.method} transaction in state "
                f"{txn.state} (final response already sent)"
            )
        self._send_response(txn, response)
        self._enter(txn, new_state, now)

    def ack_received(self, key: TransactionKey, now: float) -> None:
        """Tell an Accepted INVITE transaction that the TU matched its ACK: stop retransmitting."""
        txn = self._server.get(key)
        if txn is None:
            raise UnknownTransaction(f"no server transaction {key}")
        if txn.state is not S.ACCEPTED:
            raise TransactionError(f"ack_received in state {txn.state} of {key}")
        txn.acked = True
        self._cancel_timer(txn, "G")

    def _send_response(self, txn: _ServerTransaction, response: SipResponse) -> None:
        txn.response = response
        txn.data = response.serialize()
        txn.destination = response_destination(response.top_via, txn.peer)
        self._outgoing.append(Outgoing(txn.data, txn.destination))

    def _resend(self, txn: _Transaction) -> None:
        if txn.data and txn.destination is not None:
            self._outgoing.append(Outgoing(txn.data, txn.destination))

    def _enter(self, txn: _ServerTransaction, state: S, now: float) -> None:
        """Move to ``state`` and start its timers (§17.2.1, §17.2.2, RFC 6026)."""
        txn.state = state
        cfg, unreliable = self.timers, not txn.peer.reliable
        if state is not S.PROCEEDING:
            self._cancel_timer(txn, "trying")
        if state in (S.ACCEPTED, S.COMPLETED):
            txn.request = _answered(txn.request)
        if state is S.ACCEPTED:
            assert txn.response is not None
            txn.to_tag = txn.response.to.tag
            txn.ack_index = (txn.request.call_id, txn.request.from_.tag)
            self._accepted.setdefault(txn.ack_index, set()).add(txn.key)
            self._start_retransmissions(txn, now, unreliable)
            self._set_timer(txn, "L", now + cfg.timeout)
        elif state is S.COMPLETED and txn.kind is _INV:
            self._start_retransmissions(txn, now, unreliable)
            self._set_timer(txn, "H", now + cfg.timeout)
        elif state is S.COMPLETED:
            self._terminate_after(txn, now, cfg.timeout if unreliable else 0.0, "J")
        elif state is S.CONFIRMED:
            self._cancel_timer(txn, "G")
            self._cancel_timer(txn, "H")
            self._terminate_after(txn, now, cfg.t4 if unreliable else 0.0, "I")

    def _start_retransmissions(
        self, txn: _Transaction, now: float, unreliable: bool, name: str = "G"
    ) -> None:
        """Timer G (server) or E (client): first at T1, unreliable transports only."""
        if unreliable:
            txn.interval = self.timers.t1
            self._set_timer(txn, name, now + txn.interval)

    def _fire_server(
        self, txn: _ServerTransaction, name: str, now: float, events: list[Event]
    ) -> None:
        if name == "trying":
            if txn.response is None and txn.state is S.PROCEEDING:
                self._send_response(txn, make_response(txn.request, 100))
        elif name == "G":  # 2xx in Accepted, non-2xx in Completed
            self._resend(txn)
            txn.interval = min(2 * txn.interval, self.timers.t2)
            self._set_timer(txn, "G", now + txn.interval)
        elif name == "L":
            assert txn.response is not None
            if not txn.acked:
                events.append(AckTimeout(txn.key, txn.response))
            self._terminate(txn)
        elif name == "H":
            assert txn.response is not None
            events.append(TransactionTimeout(txn.key, txn.response))
            self._terminate(txn)
        elif name in ("I", "J"):
            self._terminate(txn)

    # ---- client side

    def send_request(self, request: SipRequest, destination: Address, now: float) -> TransactionKey:
        """Start a client non-INVITE transaction for ``request`` (BYE, OPTIONS, INFO...).

        The request must carry a fresh ``z9hG4bK`` branch (:func:`new_branch`) in its top Via.
        """
        if request.method in ("INVITE", "ACK"):
            raise TransactionError(f"no client transaction for {request.method}")
        key = transaction_key(request)
        if not key.branch.startswith(MAGIC_COOKIE):
            raise TransactionError("client requests need a z9hG4bK branch (use new_branch())")
        if (key.branch, key.method) in self._client:
            raise TransactionError(f"branch {key.branch} already used for {key.method}")
        txn = _ClientTransaction(key, request, destination, S.TRYING)
        txn.data = request.serialize()
        txn.destination = destination
        self._client[(key.branch, key.method)] = txn
        self._resend(txn)
        self._start_retransmissions(txn, now, not destination.reliable, "E")
        self._set_timer(txn, "F", now + self.timers.timeout)
        return key

    def receive_response(self, response: SipResponse, now: float) -> list[Event]:
        """A response from the network, matched by top-Via branch and CSeq method (§17.1.3).

        Responses matching no client transaction are discarded (§18.1.2).
        """
        branch = response.top_via.branch
        txn = self._client.get((branch or "", response.cseq.method))
        if txn is None:
            return []
        new_state = CLIENT_RECEIVE.get((txn.state, class_of(response.status)))
        if new_state is None:
            return []
        txn.state = new_state
        if new_state is S.COMPLETED:
            self._cancel_timer(txn, "E")
            self._cancel_timer(txn, "F")
            unreliable = not txn.peer.reliable
            self._terminate_after(txn, now, self.timers.t4 if unreliable else 0.0, "K")
        return [ResponseReceived(txn.key, response)]

    def _fire_client(
        self, txn: _ClientTransaction, name: str, now: float, events: list[Event]
    ) -> None:
        if name == "E":
            self._resend(txn)
            t2 = self.timers.t2
            txn.interval = min(2 * txn.interval, t2) if txn.state is S.TRYING else t2
            self._set_timer(txn, "E", now + txn.interval)
        elif name == "F":
            events.append(ClientTimeout(txn.key, txn.request))
            self._terminate(txn)
        elif name == "K":
            self._terminate(txn)

    # ---- timers and removal

    def _set_timer(self, txn: _Transaction, name: str, deadline: float) -> None:
        txn.timers[name] = deadline
        heapq.heappush(self._heap, (deadline, next(self._seq), txn, name))

    def _cancel_timer(self, txn: _Transaction, name: str) -> None:
        txn.timers.pop(name, None)  # its heap entry goes stale and is skipped

    def _terminate_after(self, txn: _Transaction, now: float, delay: float, name: str) -> None:
        if delay > 0:
            self._set_timer(txn, name, now + delay)
        else:
            self._terminate(txn)

    def _terminate(self, txn: _Transaction) -> None:
        txn.state = S.TERMINATED
        txn.timers.clear()
        if isinstance(txn, _ServerTransaction):
            self._server.pop(txn.key, None)
            if txn.ack_index is not None:
                keys = self._accepted.get(txn.ack_index)
                if keys is not None:
                    keys.discard(txn.key)
                    if not keys:
                        del self._accepted[txn.ack_index]
        else:
            self._client.pop((txn.key.branch, txn.key.method), None)
