"""Tolerance where the intent is unambiguous (issue 9, item 5), from SIPp against the real node.

- ``tolerant_cseq_method.xml``: an ACK and a BYE whose CSeq names INVITE are taken as what their
  request line says: the call is confirmed, then ended by the BYE (today's 400 left it up until
  the session timeout), one ``sip_tolerated`` line for the call.
- ``tolerant_metadata_unparsed.xml``: metadata that is not well-formed XML still records the
  call, participants from From and To, ``metadata_unparsed`` in the sidecar's verdict.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.siprec.harness import Recorder, SippRun, run_scenario

pytestmark = pytest.mark.integration


def test_ack_and_bye_with_an_invite_cseq_end_the_call(recorder: Recorder) -> None:
    run = run_scenario("tolerant_cseq_method.xml", recorder)
    responses = [(r.method, r.status) for r in run.responses()]
    assert responses == [("INVITE", 200), ("BYE", 200)], responses
    bye_ok = run.responses("BYE", 200)[0]
    assert bye_ok.header("CSeq") == "2 BYE"
    recorder.wait_for_event("call_active", call_id=run.call_id)
    ended = recorder.wait_for_event("call_ended", call_id=run.call_id)
    assert (ended["status"], ended["reason"]) == ("ended", "BYE from SRC")
    tolerated = recorder.events("sip_tolerated", call_id=run.call_id)
    assert [(t["fault"], t["method"], t["cseq"]) for t in tolerated] == [
        ("cseq_method_mismatch", "ACK", "1 INVITE")
    ]
    assert not recorder.events("sip_malformed", call_id=run.call_id)
    assert not recorder.events("ack_timeout", call_id=run.call_id)


def test_metadata_not_well_formed_still_records(recorder: Recorder) -> None:
    with SippRun("tolerant_metadata_unparsed.xml", recorder) as run:
        recorder.wait_for_event("call_active", call_id=run.call_id)
        session = recorder.session(run.call_id)
        run.release()
        outcome = run.finish()
    assert outcome.ok, outcome.explain()
    assert [(p["id"], p["aor"]) for p in session["participants"]] == [
        ("caller", f"sip:src@127.0.0.1:{run.port}"),
        ("callee", f"sip:srs@127.0.0.1:{recorder.sip_port}"),
    ]
    assert [s["label"] for s in session["streams"]] == ["1", "2"]
    tolerated = recorder.events("sip_tolerated", call_id=run.call_id)
    assert [t["fault"] for t in tolerated] == ["metadata_unparsed"]
    assert "not well-formed XML" in tolerated[0]["error"]
    done = recorder.wait_for_event("recording_finalised", call_id=run.call_id)
    sidecar = json.loads(Path(str(done["sidecar"])).read_text())
    problems = {p["kind"]: p for p in sidecar["verdict"]["problems"]}
    assert "not well-formed XML" in problems["metadata_unparsed"]["detail"]
    # the call got no RTP: the verdict says that too, next to the flag
    assert "no_rtp" in problems
    assert [p["aor"] for p in sidecar["participants"]] == [
        f"sip:src@127.0.0.1:{run.port}",
        f"sip:srs@127.0.0.1:{recorder.sip_port}",
    ]
