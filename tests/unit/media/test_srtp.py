"""SDES-SRTP unprotect: packets protected by a libsrtp sender session, keys as a=crypto has them."""

from __future__ import annotations

import base64
import struct

import pylibsrtp
import pytest

from siprec_node.media.srtp import SdesKey, SrtpConfigError, SrtpReceiver
from siprec_node.siprec.sdp_answer import SrtpKeys

KEY = bytes(range(30))
INLINE = base64.b64encode(KEY).decode()
SSRC = 0x5EC0_0001


def rtp(seq: int, payload: bytes = b"\x55" * 160) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, 160 * seq, SSRC) + payload


def sr() -> bytes:
    return struct.pack("!BBHIQIII", 0x80, 200, 6, SSRC, 123 << 32, 5, 1, 160)


def sender(profile: int) -> pylibsrtp.Session:
    return pylibsrtp.Session(
        pylibsrtp.Policy(
            key=KEY, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile
        )
    )


@pytest.mark.parametrize(
    ("suite", "profile", "tag"),
    [
        ("AES_CM_128_HMAC_SHA1_80", pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 10),
        ("AES_CM_128_HMAC_SHA1_32", pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32, 4),
    ],
)
def test_unprotect_rtp_and_rtcp(suite: str, profile: int, tag: int) -> None:
    tx = sender(profile)
    rx = SrtpReceiver(SdesKey.parse(suite, f"inline:{INLINE}|2^31"))
    for seq in (65534, 65535, 0, 1):  # across the rollover counter
        protected = tx.protect(rtp(seq))
        assert len(protected) == len(rtp(seq)) + tag
        assert protected[12:] != rtp(seq)[12:]  # really encrypted
        assert rx.unprotect_rtp(protected) == rtp(seq)
    assert rx.unprotect_rtcp(tx.protect_rtcp(sr())) == sr()
    assert (rx.failures, rx.replays, rx.rtcp_failures) == (0, 0, 0)


def test_tampered_and_replayed_packets_are_dropped_and_counted() -> None:
    tx = sender(pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80)
    rx = SrtpReceiver(SdesKey.parse("AES_CM_128_HMAC_SHA1_80", f"inline:{INLINE}"))
    good = tx.protect(rtp(10))
    bad = bytearray(tx.protect(rtp(11)))
    bad[20] ^= 1
    assert rx.unprotect_rtp(bytes(bad)) is None
    assert rx.unprotect_rtp(good) == rtp(10)
    assert rx.unprotect_rtp(good) is None  # replay
    assert rx.unprotect_rtp(b"\x80\x00") is None  # too short for SRTP
    assert rx.unprotect_rtcp(sr()) is None  # plain RTCP where SRTCP is due
    assert (rx.failures, rx.replays, rx.rtcp_failures) == (2, 1, 1)


def test_wrong_key_fails() -> None:
    tx = sender(pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80)
    other = base64.b64encode(bytes(30)).decode()
    rx = SrtpReceiver(SdesKey.parse("AES_CM_128_HMAC_SHA1_80", f"inline:{other}"))
    assert rx.unprotect_rtp(tx.protect(rtp(1))) is None
    assert rx.failures == 1


def test_mki_is_cut_out() -> None:
    tx = sender(pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80)
    rx = SrtpReceiver(SdesKey.parse("AES_CM_128_HMAC_SHA1_80", f"inline:{INLINE}|2^20|7:4"))
    mki = (7).to_bytes(4, "big")
    protected = tx.protect(rtp(3))
    with_mki = protected[:-10] + mki + protected[-10:]  # RFC 3711: MKI before the tag
    assert rx.unprotect_rtp(with_mki) == rtp(3)
    srtcp = tx.protect_rtcp(sr())
    assert rx.unprotect_rtcp(srtcp[:-10] + mki + srtcp[-10:]) == sr()


def test_from_negotiated_keys() -> None:
    keys = SrtpKeys(
        suite="AES_CM_128_HMAC_SHA1_32",
        tag=1,
        remote_key=INLINE,
        local_key="ignored",
        remote_key_params=f"inline:{INLINE}",
    )
    key = SdesKey.from_keys(keys)
    assert key == SdesKey("AES_CM_128_HMAC_SHA1_32", KEY, 0)
    tx = sender(pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32)
    assert SrtpReceiver.from_keys(keys).unprotect_rtp(tx.protect(rtp(5))) == rtp(5)


@pytest.mark.parametrize(
    ("suite", "params"),
    [
        ("AES_256_CM_HMAC_SHA1_80", f"inline:{INLINE}"),
        ("AES_CM_128_HMAC_SHA1_80", "uri:https://example.invalid/key"),
        ("AES_CM_128_HMAC_SHA1_80", "inline:%%%notbase64"),
        ("AES_CM_128_HMAC_SHA1_80", f"inline:{base64.b64encode(bytes(16)).decode()}"),
        ("AES_CM_128_HMAC_SHA1_80", f"inline:{INLINE}|1:x"),
    ],
)
def test_unusable_keys_are_refused(suite: str, params: str) -> None:
    with pytest.raises(SrtpConfigError):
        SdesKey.parse(suite, params)


def test_key_without_base64_padding() -> None:
    assert SdesKey.parse("AES_CM_128_HMAC_SHA1_80", f"inline:{INLINE.rstrip('=')}").key_salt == KEY
