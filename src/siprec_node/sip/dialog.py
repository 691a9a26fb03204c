"""UAS dialogs (RFC 3261 §12), sans-I/O, and the table that finds them for in-dialog requests.

A :class:`Dialog` is created from the INVITE the node answers, checks the CSeq of later requests
(§12.2.2), builds the requests the node sends (§12.2.1.1), and round-trips through a JSON-safe dict
so that a restarted or takeover node can answer in-dialog requests. :class:`DialogTable` finds the
dialog of a request, tolerating what real SRCs send (INTEROP: no To tag).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

from siprec_node.sip.errors import SipParseError
from siprec_node.sip.message import Headers, SipRequest
from siprec_node.sip.transaction import Address
from siprec_node.sip.uri import NameAddr, SipUri

SNAPSHOT_VERSION = 1
MAX_FORWARDS = 70
TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE"})


class DialogError(Exception):
    """An illegal action on a dialog (a request from a terminated dialog, a bad snapshot...)."""


class DialogState(StrEnum):
    """Dialog states (§12): early until the 2xx, confirmed, then terminated."""

    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


# (state, action) -> next state; anything else raises DialogError.
_TRANSITIONS: dict[tuple[DialogState, str], DialogState] = {
    (DialogState.EARLY, "confirm"): DialogState.CONFIRMED,
    (DialogState.CONFIRMED, "confirm"): DialogState.CONFIRMED,
    (DialogState.EARLY, "terminate"): DialogState.TERMINATED,
    (DialogState.CONFIRMED, "terminate"): DialogState.TERMINATED,
    (DialogState.TERMINATED, "terminate"): DialogState.TERMINATED,
}


class DialogId(NamedTuple):
    """(Call-ID, local tag, remote tag); the remote tag is None for RFC 2543 peers."""

    call_id: str
    local_tag: str
    remote_tag: str | None


@dataclass(frozen=True)
class RequestCheck:
    """The verdict of :meth:`Dialog.check_request`.

    ``status`` is None when the request is accepted, else the status to answer with.
    ``lenient`` marks a request accepted in spite of a rule (INTEROP): log ``reason``.
    """

    status: int | None = None
    lenient: bool = False
    reason: str = ""

    @property
    def ok(self) -> bool:
        """True when the request may be processed."""
        return self.status is None


@dataclass
class Dialog:
    """The UAS side of a dialog created by an INVITE (§12.1.1)."""

    call_id: str
    local_tag: str
    remote_tag: str | None
    local_uri: str
    remote_uri: str
    remote_target: str
    local_contact: str
    peer: Address
    route_set: list[str] = field(default_factory=list)
    remote_cseq: int = 0
    local_cseq: int = 0
    secure: bool = False
    state: DialogState = DialogState.EARLY

    @classmethod
    def from_invite(
        cls, invite: SipRequest, local_tag: str, local_contact: str, source: Address
    ) -> Dialog:
        """The dialog a UAS creates when answering ``invite`` with ``local_tag`` in its To.

        Route set = the Record-Route URIs in order; remote target = the Contact URI (a Contact
        missing its ``>`` is accepted; with no Contact at all, the source address is used).
        """
        if invite.method != "INVITE":
            raise DialogError(f"dialogs are created by INVITE, not {invite.method}")
        remote, local = invite.from_, invite.to
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=remote.tag,
            local_uri=local.uri,
            remote_uri=remote.uri,
            remote_target=_contact_uri(invite) or _source_uri(source),
            local_contact=local_contact,
            peer=source,
            route_set=invite.headers.get_all("Record-Route"),
            remote_cseq=invite.cseq.number,
            local_cseq=0,  # empty (§12.1.1): the first request the node sends gets CSeq 1
            secure=source.transport == "tls" and invite.uri.lower().startswith("sips:"),
        )

    @property
    def id(self) -> DialogId:
        """The dialog identifier."""
        return DialogId(self.call_id, self.local_tag, self.remote_tag)

    @property
    def transport(self) -> str:
        """The transport the dialog's requests arrived on (udp, tcp, tls)."""
        return self.peer.transport

    # ---- state

    def _transition(self, action: str) -> None:
        new = _TRANSITIONS.get((self.state, action))
        if new is None:
            raise DialogError(f"cannot {action} a dialog in state {self.state}")
        self.state = new

    def confirm(self) -> None:
        """The 2xx to the INVITE was sent."""
        self._transition("confirm")

    def terminate(self) -> None:
        """BYE, a non-2xx final response, or a timeout ended the dialog (idempotent)."""
        self._transition("terminate")

    # ---- incoming requests

    def check_request(self, request: SipRequest) -> RequestCheck:
        """Apply the CSeq rules of §12.2.2 and record the new remote CSeq when accepted.

        A lower CSeq than the last one is out of order: 500. INTEROP: a BYE with a lower CSeq is
        accepted anyway (``lenient``). ACK and CANCEL carry the INVITE's number and are not
        checked. A terminated dialog answers 481.
        """
        if self.state is DialogState.TERMINATED and request.method != "ACK":
            return RequestCheck(481, reason="dialog terminated")
        if request.method in ("ACK", "CANCEL"):
            return RequestCheck()
        number = request.cseq.number
        if number < self.remote_cseq:
            reason = f"CSeq {number} lower than {self.remote_cseq}"
            if request.method == "BYE":
                return RequestCheck(lenient=True, reason=reason)
            return RequestCheck(500, reason=reason)
        self.remote_cseq = number
        return RequestCheck()

    def refresh_target(self, request: SipRequest) -> None:
        """After a successful target refresh (re-INVITE, UPDATE), adopt its Contact (§12.2.2)."""
        if request.method in TARGET_REFRESH_METHODS:
            uri = _contact_uri(request)
            if uri:
                self.remote_target = uri

    # ---- outgoing requests

    def create_request(
        self,
        method: str,
        via: str,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> SipRequest:
        """A request within the dialog (§12.2.1.1), with the next local CSeq.

        ``via`` is the full Via value with a fresh branch. Request-URI is the remote target and
        Route the route set (loose routing); a strict-routing first hop (no ``lr``) becomes the
        Request-URI and the remote target goes last in Route. INVITE/UPDATE get our Contact.
        """
        method = method.upper()
        if method in ("ACK", "CANCEL"):
            raise DialogError(f"{method} is not built from the dialog's CSeq space")
        if self.state is DialogState.TERMINATED:
            raise DialogError(f"cannot send {method} in a terminated dialog")
        self.local_cseq += 1
        uri, routes = self._request_uri_and_routes()
        remote = NameAddr(self.remote_uri)
        if self.remote_tag is not None:
            remote = remote.with_param("tag", self.remote_tag)
        fields: list[tuple[str, str]] = [("Via", via), ("Max-Forwards", str(MAX_FORWARDS))]
        fields.extend(("Route", r) for r in routes)
        fields += [
            ("From", str(NameAddr(self.local_uri).with_param("tag", self.local_tag))),
            ("To", str(remote)),
            ("Call-ID", self.call_id),
            ("CSeq", f"{self.local_cseq} {method}"),
        ]
        if method in TARGET_REFRESH_METHODS:
            fields.append(("Contact", self.local_contact))
        fields.extend(headers)
        return SipRequest(method, uri, Headers.of(fields), body)

    def _request_uri_and_routes(self) -> tuple[str, list[str]]:
        if not self.route_set:
            return self.remote_target, []
        first = NameAddr.parse(self.route_set[0]).uri
        if _is_loose(first):
            return self.remote_target, list(self.route_set)
        return first, [*self.route_set[1:], f"<{self.remote_target}>"]

    # ---- persistence

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe snapshot (for the session store and restart recovery)."""
        return {
            "version": SNAPSHOT_VERSION,
            "call_id": self.call_id,
            "local_tag": self.local_tag,
            "remote_tag": self.remote_tag,
            "local_uri": self.local_uri,
            "remote_uri": self.remote_uri,
            "remote_target": self.remote_target,
            "local_contact": self.local_contact,
            "route_set": list(self.route_set),
            "remote_cseq": self.remote_cseq,
            "local_cseq": self.local_cseq,
            "secure": self.secure,
            "state": self.state.value,
            "peer": {
                "transport": self.peer.transport,
                "host": self.peer.host,
                "port": self.peer.port,
                "connection_id": self.peer.connection_id,
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Dialog:
        """Rebuild a dialog from :meth:`to_dict`'s output; raises DialogError if malformed."""
        try:
            version = data.get("version", SNAPSHOT_VERSION)
            if version != SNAPSHOT_VERSION:
                raise DialogError(f"unsupported dialog snapshot version {version!r}")
            peer = data["peer"]
            return cls(
                call_id=str(data["call_id"]),
                local_tag=str(data["local_tag"]),
                remote_tag=None if data["remote_tag"] is None else str(data["remote_tag"]),
                local_uri=str(data["local_uri"]),
                remote_uri=str(data["remote_uri"]),
                remote_target=str(data["remote_target"]),
                local_contact=str(data["local_contact"]),
                peer=Address(
                    peer["transport"],
                    str(peer["host"]),
                    int(peer["port"]),
                    None if peer.get("connection_id") is None else int(peer["connection_id"]),
                ),
                route_set=[str(r) for r in data.get("route_set", [])],
                remote_cseq=int(data["remote_cseq"]),
                local_cseq=int(data["local_cseq"]),
                secure=bool(data.get("secure", False)),
                state=DialogState(data["state"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DialogError(f"malformed dialog snapshot: {exc!r}") from exc


def _contact_uri(request: SipRequest) -> str | None:
    contacts = request.headers.get_all("Contact")
    if not contacts:
        return None
    try:
        return NameAddr.parse(contacts[0]).uri
    except SipParseError:
        return None


def _source_uri(source: Address) -> str:
    host = f"[{source.host}]" if ":" in source.host else source.host
    transport = "" if source.transport == "udp" else f";transport={source.transport}"
    return f"sip:{host}:{source.port}{transport}"


def _is_loose(uri: str) -> bool:
    try:
        return "lr" in SipUri.parse(uri).params
    except SipParseError:
        return True


@dataclass(frozen=True)
class DialogMatch:
    """A dialog found for a request; ``lenient`` when only the INTEROP rule matched it."""

    dialog: Dialog
    lenient: bool = False


class DialogTable:
    """The node's dialogs, indexed by (Call-ID, local tag, remote tag)."""

    def __init__(self) -> None:
        self._dialogs: dict[DialogId, Dialog] = {}
        self._by_remote: dict[tuple[str, str | None], set[DialogId]] = {}

    def __len__(self) -> int:
        return len(self._dialogs)

    def __iter__(self) -> Iterator[Dialog]:
        return iter(list(self._dialogs.values()))

    def __contains__(self, dialog_id: object) -> bool:
        return dialog_id in self._dialogs

    def add(self, dialog: Dialog) -> None:
        """Register a dialog; its id must be new."""
        dialog_id = dialog.id
        if dialog_id in self._dialogs:
            raise DialogError(f"dialog {dialog_id} already exists")
        self._dialogs[dialog_id] = dialog
        self._by_remote.setdefault((dialog.call_id, dialog.remote_tag), set()).add(dialog_id)

    def remove(self, dialog: Dialog | DialogId) -> Dialog | None:
        """Forget a dialog; returns it, or None if it was not there."""
        dialog_id = dialog.id if isinstance(dialog, Dialog) else dialog
        found = self._dialogs.pop(dialog_id, None)
        if found is not None:
            index = (dialog_id.call_id, dialog_id.remote_tag)
            ids = self._by_remote[index]
            ids.discard(dialog_id)
            if not ids:
                del self._by_remote[index]
        return found

    def get(self, dialog_id: DialogId) -> Dialog | None:
        """The dialog with exactly this id."""
        return self._dialogs.get(dialog_id)

    def match(self, request: SipRequest) -> DialogMatch | None:
        """Find the dialog of an incoming in-dialog request.

        Exact (Call-ID, To tag, From tag) first; display names and CSeq never matter. INTEROP: a
        request with no To tag matches by Call-ID + From tag when exactly one dialog fits.
        """
        call_id, remote_tag, local_tag = request.call_id, request.from_.tag, request.to.tag
        if local_tag is not None:
            found = self._dialogs.get(DialogId(call_id, local_tag, remote_tag))
            return DialogMatch(found) if found else None
        ids = self._by_remote.get((call_id, remote_tag), ())
        if len(ids) == 1:
            return DialogMatch(self._dialogs[next(iter(ids))], lenient=True)
        return None

    def lookup(self, request: SipRequest) -> Dialog | None:
        """The dialog of ``request``, or None (the caller answers 481)."""
        found = self.match(request)
        return found.dialog if found else None
