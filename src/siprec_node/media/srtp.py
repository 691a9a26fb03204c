"""SDES-SRTP (RFC 4568) reception: unprotect SRTP and SRTCP with pylibsrtp (libsrtp2).

The key comes from the SRC's ``a=crypto`` line: ``inline:<base64 key||salt>[|lifetime][|MKI:len]``
with suite ``AES_CM_128_HMAC_SHA1_80`` or ``AES_CM_128_HMAC_SHA1_32`` (30 bytes of key and salt
for both). The policy accepts any inbound SSRC, so an SSRC change needs nothing.

An MKI (RFC 3711 §3.1) sits between the encrypted part and the authentication tag and is not
authenticated; pylibsrtp configures no MKI, so when the key declares one, its bytes are cut out
of each packet before libsrtp sees it (only the single key of the ``a=crypto`` is used, so the MKI
value itself is not checked). The lifetime is not enforced.

A packet that fails (authentication, replay) is dropped: :meth:`SrtpReceiver.unprotect_rtp`
returns None and counts it, as ``replays`` when libsrtp's replay check refused it (a duplicate,
or an index too old), else as ``failures``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import pylibsrtp

from siprec_node.siprec.sdp_answer import SrtpKeys

SUITES = {
    "AES_CM_128_HMAC_SHA1_80": (pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 10),
    "AES_CM_128_HMAC_SHA1_32": (pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32, 4),
}
SRTCP_TAG_LENGTH = 10  # both suites authenticate SRTCP with 80 bits (RFC 4568 §6.2)
KEY_SALT_LENGTH = 30
REPLAY_WINDOW = 1024  # packets; libsrtp's default of 128 is 2.5 s of 20 ms audio


class SrtpConfigError(ValueError):
    """The negotiated SRTP parameters cannot be used (suite, key, MKI)."""


@dataclass(frozen=True)
class SdesKey:
    """One ``a=crypto`` key: the suite, key||salt, and the MKI length in bytes (0: none)."""

    suite: str
    key_salt: bytes
    mki_length: int = 0

    @classmethod
    def parse(cls, suite: str, key_params: str) -> SdesKey:
        """From a suite name and the crypto line's key parameters (``inline:...``)."""
        if suite not in SUITES:
            raise SrtpConfigError(f"SRTP suite {suite} not supported")
        inline = None
        for param in key_params.split(";"):
            method, _, info = param.partition(":")
            if method.strip().lower() == "inline":
                inline = info.strip()
                break
        if inline is None:
            raise SrtpConfigError("no inline key in the crypto attribute")
        key, *extra = inline.split("|")
        try:
            key_salt = base64.b64decode(key + "=" * (-len(key) % 4), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SrtpConfigError(f"inline key is not base64: {exc}") from None
        if len(key_salt) != KEY_SALT_LENGTH:
            raise SrtpConfigError(f"inline key is {len(key_salt)} bytes, not {KEY_SALT_LENGTH}")
        mki_length = 0
        for field in extra:
            if ":" in field:  # MKI:length (the other field, the lifetime, has no colon)
                _, _, length = field.partition(":")
                if not length.isdigit() or not 1 <= int(length) <= 128:
                    raise SrtpConfigError(f"bad MKI length in {field!r}")
                mki_length = int(length)
        return cls(suite, key_salt, mki_length)

    @classmethod
    def from_keys(cls, keys: SrtpKeys) -> SdesKey:
        """The SRC's key of a negotiated stream (what decrypts what it sends us)."""
        params = keys.remote_key_params or f"inline:{keys.remote_key}"
        return cls.parse(keys.suite, params)


class SrtpReceiver:
    """Unprotects the SRTP and SRTCP one SRC sends on one stream."""

    def __init__(self, key: SdesKey) -> None:
        profile, tag = SUITES[key.suite]
        policy = pylibsrtp.Policy(
            key=key.key_salt,
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
            srtp_profile=profile,
        )
        policy.window_size = REPLAY_WINDOW
        self._session = pylibsrtp.Session(policy)
        self._mki = key.mki_length
        self._rtp_tag = tag
        self.failures = 0
        self.replays = 0
        self.rtcp_failures = 0

    @classmethod
    def from_keys(cls, keys: SrtpKeys) -> SrtpReceiver:
        return cls(SdesKey.from_keys(keys))

    def unprotect_rtp(self, data: bytes) -> bytes | None:
        """The RTP packet inside an SRTP one; None (counted) when it does not authenticate."""
        if self._mki:
            data = _cut_mki(data, self._mki, self._rtp_tag)
        try:
            return self._session.unprotect(data)
        except pylibsrtp.Error as exc:
            if "replay" in str(exc):
                self.replays += 1
            else:
                self.failures += 1
        except (ValueError, TypeError):  # too long for pylibsrtp's buffer, or not bytes
            self.failures += 1
        return None

    def unprotect_rtcp(self, data: bytes) -> bytes | None:
        """The RTCP compound inside an SRTCP packet; None (counted) when it fails."""
        if self._mki:
            data = _cut_mki(data, self._mki, SRTCP_TAG_LENGTH)
        try:
            return self._session.unprotect_rtcp(data)
        except (pylibsrtp.Error, ValueError, TypeError):
            self.rtcp_failures += 1
        return None


def _cut_mki(data: bytes, mki: int, tag: int) -> bytes:
    if len(data) < 12 + mki + tag:
        return data  # libsrtp refuses it
    cut = len(data) - tag
    return data[: cut - mki] + data[cut:]
