"""The state tables of :mod:`siprec_node.sip.transaction` (RFC 3261 §17, RFC 6026's Accepted
state): what a server transaction does with a response the TU sends, a retransmitted request
or an ACK, and what a client non-INVITE transaction does with a response, in each state. Pure
data; the transaction layer looks its reactions up here and runs them.
"""

from __future__ import annotations

from enum import StrEnum


class TransactionState(StrEnum):
    """States of RFC 3261 §17 (Accepted from RFC 6026)."""

    TRYING = "trying"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


S = TransactionState


class Kind(StrEnum):
    """INVITE transactions and the others follow different tables (§17.2.1, §17.2.2)."""

    INVITE = "invite"
    NON_INVITE = "non-invite"


class ResponseClass(StrEnum):
    """What the tables tell responses apart by."""

    PROVISIONAL = "1xx"
    SUCCESS = "2xx"
    FAILURE = "3xx-6xx"


def class_of(status: int) -> ResponseClass:
    """The class of a status code."""
    if status < 200:
        return ResponseClass.PROVISIONAL
    return ResponseClass.SUCCESS if status < 300 else ResponseClass.FAILURE


class Do(StrEnum):
    """A reaction to a request or ACK that matched a transaction."""

    ABSORB = "absorb"  # drop silently
    RESEND = "resend"  # send the last response again (if any)
    RESEND_UNACKED = "resend-unacked"  # the same, while no ACK has come
    PASS = "pass"  # report to the TU


_INV, _NON = Kind.INVITE, Kind.NON_INVITE
_1XX, _2XX, _FAIL = ResponseClass.PROVISIONAL, ResponseClass.SUCCESS, ResponseClass.FAILURE

# A response sent by the TU: (kind, state, class) -> next state. Anything else is illegal.
SERVER_SEND: dict[tuple[Kind, S, ResponseClass], S] = {
    (_INV, S.PROCEEDING, _1XX): S.PROCEEDING,
    (_INV, S.PROCEEDING, _2XX): S.ACCEPTED,
    (_INV, S.PROCEEDING, _FAIL): S.COMPLETED,
    (_NON, S.TRYING, _1XX): S.PROCEEDING,
    (_NON, S.TRYING, _2XX): S.COMPLETED,
    (_NON, S.TRYING, _FAIL): S.COMPLETED,
    (_NON, S.PROCEEDING, _1XX): S.PROCEEDING,
    (_NON, S.PROCEEDING, _2XX): S.COMPLETED,
    (_NON, S.PROCEEDING, _FAIL): S.COMPLETED,
}

# A retransmitted request: (kind, state) -> reaction.
SERVER_RETRANSMISSION: dict[tuple[Kind, S], Do] = {
    (_INV, S.PROCEEDING): Do.RESEND,  # the last provisional, if any
    (_INV, S.ACCEPTED): Do.RESEND_UNACKED,  # the 2xx
    (_INV, S.COMPLETED): Do.RESEND,
    (_INV, S.CONFIRMED): Do.ABSORB,
    (_NON, S.TRYING): Do.ABSORB,
    (_NON, S.PROCEEDING): Do.RESEND,
    (_NON, S.COMPLETED): Do.RESEND,
}

# An ACK matching an INVITE server transaction: state -> (next state, reaction).
SERVER_ACK: dict[S, tuple[S, Do]] = {
    S.PROCEEDING: (S.PROCEEDING, Do.ABSORB),  # nothing to acknowledge yet
    S.ACCEPTED: (S.ACCEPTED, Do.PASS),  # the first one; duplicates absorbed
    S.COMPLETED: (S.CONFIRMED, Do.ABSORB),
    S.CONFIRMED: (S.CONFIRMED, Do.ABSORB),
}

# A response to a client non-INVITE transaction: (state, class) -> next state, None = absorb.
CLIENT_RECEIVE: dict[tuple[S, ResponseClass], S | None] = {
    (S.TRYING, _1XX): S.PROCEEDING,
    (S.TRYING, _2XX): S.COMPLETED,
    (S.TRYING, _FAIL): S.COMPLETED,
    (S.PROCEEDING, _1XX): S.PROCEEDING,
    (S.PROCEEDING, _2XX): S.COMPLETED,
    (S.PROCEEDING, _FAIL): S.COMPLETED,
    (S.COMPLETED, _1XX): None,
    (S.COMPLETED, _2XX): None,
    (S.COMPLETED, _FAIL): None,
}
