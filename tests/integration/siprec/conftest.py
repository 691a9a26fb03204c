"""A recorder node (SIP on UDP and TCP, HTTP API on) per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.siprec.harness import Recorder, start_recorder


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    node = start_recorder()
    try:
        yield node
    finally:
        code = node.process.stop()
        assert code == 0, "\n".join(node.process.raw[-40:])
