"""SIP over TLS: the same stream code path as TCP, with the node's certificate (and, with a CA
file configured, client certificates required)."""

from __future__ import annotations

import socket
import ssl
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.integration.node_process import free_port, start_node

pytestmark = pytest.mark.integration


def _make_cert(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={name}",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


OPTIONS = (
    b"OPTIONS sip:srs@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK-tls-1\r\n"
    b"From: <sip:sbc@example.com>;tag=tls1\r\nTo: <sip:srs@127.0.0.1>\r\n"
    b"Call-ID: tls-options-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


def _exchange(port: int, context: ssl.SSLContext) -> bytes:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(OPTIONS)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = tls.recv(4096)
            if not chunk:
                break
            data += chunk
        return data


def test_options_over_tls_with_client_certificates() -> None:
    certs = Path(tempfile.mkdtemp())
    server_cert, server_key = _make_cert(certs, "node")
    client_cert, client_key = _make_cert(certs, "sbc")
    port = free_port((socket.SOCK_STREAM,))
    node = start_node(
        f"""
[sip.tls]
cert_file = "{server_cert}"
key_file = "{server_key}"
ca_file = "{client_cert}"
""",
        env={"SIPREC_SIP__LISTEN": f'["udp:127.0.0.1:0", "tls:127.0.0.1:{port}"]'},
    )
    try:
        trusted = ssl.create_default_context(cafile=str(server_cert))
        trusted.load_cert_chain(str(client_cert), str(client_key))
        reply = _exchange(port, trusted)
        assert reply.startswith(b"SIP/2.0 200 OK"), reply
        assert b"Call-ID: tls-options-1" in reply
        # a client without a certificate is refused (TLS 1.3 reports it after the handshake:
        # an alert on the first read, or the connection closed) and gets no SIP answer
        anonymous = ssl.create_default_context(cafile=str(server_cert))
        try:
            refused = _exchange(port, anonymous)
        except (ssl.SSLError, ConnectionError):
            refused = b""
        assert refused == b""
    finally:
        assert node.stop() == 0, "\n".join(node.raw[-30:])
