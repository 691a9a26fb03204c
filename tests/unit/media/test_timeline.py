"""StreamTimeline placement rules of FORMAT.md, driven with hand-made packet fields."""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siprec_node.media.stream_file import DtmfRecord, SsrcSpan
from siprec_node.media.timeline import Placed, StreamTimeline, opus_duration

EPOCH = 1000.0
START = 1000.5  # first arrival: position 4000
PTIME = 0.02
A, B = 0x11111111, 0x22222222

Packet = tuple[int, int, int, int, bytes, float]


def timeline(**kw: object) -> StreamTimeline:
    kw.setdefault("payload_type", 0)
    kw.setdefault("telephone_event_pt", 101)
    return StreamTimeline(8000, EPOCH, **kw)  # type: ignore[arg-type]


def payload(i: int) -> bytes:
    return bytes([i % 251]) * 160


def stream(
    n: int,
    *,
    ssrc: int = A,
    seq0: int = 1000,
    ts0: int = 50_000,
    start: float = START,
    first: int = 0,
) -> list[Packet]:
    """n in-order 20 ms PCMU packets from number ``first``; packet i arrives at start + i·20 ms."""
    return [
        (
            ssrc,
            (seq0 + i) & 0xFFFF,
            (ts0 + 160 * i) & 0xFFFFFFFF,
            0,
            payload(i),
            start + PTIME * i,
        )
        for i in range(first, first + n)
    ]


def run(tl: StreamTimeline, packets: list[Packet]) -> list[Placed]:
    out: list[Placed] = []
    for p in packets:
        out += tl.push(*p)
    return out + tl.flush()


def expected(indexes: list[int] | range, base: int = 4000) -> list[tuple[int, bytes]]:
    return [(base + 160 * i, payload(i)) for i in indexes]


def check_order(out: list[Placed]) -> None:
    positions = [p.position for p in out]
    assert positions == sorted(set(positions))


def test_in_order() -> None:
    tl = timeline()
    out = run(tl, stream(100))
    assert out == expected(range(100))
    assert (tl.packets, tl.lost, tl.duplicates, tl.late) == (100, 0, 0, 0)
    assert tl.first_position == 4000 and tl.last_position == 4000 + 99 * 160
    assert tl.ssrcs == [SsrcSpan(A, 4000)]
    assert tl.jitter_ms == pytest.approx(0.0, abs=1e-6)


def test_packets_come_out_as_soon_as_contiguous() -> None:
    tl = timeline()
    packets = stream(10)
    assert tl.push(*packets[0]) == []  # the first waits: an earlier one may be in flight
    assert tl.push(*packets[1]) == []
    assert tl.push(*packets[2]) == []
    # 60 ms after the first has arrived: the first three are released together
    assert [p.position for p in tl.push(*packets[3])] == [4000, 4160, 4320, 4480]
    assert [p.position for p in tl.push(*packets[4])] == [4640]  # then one by one
    assert tl.held == 0


def test_first_packet_before_epoch_starts_at_zero() -> None:
    tl = timeline()
    out = run(tl, stream(5, start=EPOCH - 0.5))
    assert out[0].position == 0 and tl.late == 0


def test_five_percent_loss() -> None:
    rng = random.Random(5)
    n = 1000
    lost = set(rng.sample(range(1, n - 1), 50))
    kept = [i for i in range(n) if i not in lost]
    tl = timeline()
    out = run(tl, [p for i, p in enumerate(stream(n)) if i not in lost])
    assert out == expected(kept)
    assert (tl.packets, tl.lost, tl.late) == (950, 50, 0)


def test_reordering_within_the_window() -> None:
    packets = stream(60)
    swapped = list(packets)
    for i in range(1, 58, 4):  # pairs swapped, and one packet 2 slots late
        swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
    swapped.insert(42, swapped.pop(40))
    tl = timeline()
    assert run(tl, swapped) == expected(range(60))
    assert (tl.lost, tl.late, tl.duplicates) == (0, 0, 0)


def test_late_packet_is_dropped_and_counted() -> None:
    packets = stream(40)
    late = packets.pop(10)
    packets.insert(20, late)  # 10 slots = 200 ms late: its place was written as silence
    tl = timeline()
    out = run(tl, packets)
    assert out == expected([i for i in range(40) if i != 10])
    assert (tl.late, tl.lost, tl.packets) == (1, 0, 40)


def test_duplicates_dropped() -> None:
    packets = stream(30)
    doubled = [p for p in packets for _ in (0, 1)]
    doubled.insert(15, packets[3])  # an old duplicate, after its position was written
    tl = timeline()
    assert run(tl, doubled) == expected(range(30))
    assert (tl.duplicates, tl.packets, tl.lost, tl.late) == (31, 30, 0, 0)


def test_sequence_wrap_with_loss_across_it() -> None:
    packets = stream(40, seq0=65520)
    del packets[16]  # seq 65535 ... not sent
    del packets[16]  # seq 0 neither
    tl = timeline()
    out = run(tl, packets)
    assert len(out) == 38
    assert (tl.packets, tl.lost) == (38, 2)


def test_reordered_across_sequence_wrap() -> None:
    packets = stream(30, seq0=65530)
    packets[5], packets[6] = packets[6], packets[5]  # 65535 and 0 swapped
    packets[0], packets[1] = packets[1], packets[0]  # and the very first two
    tl = timeline()
    assert run(tl, packets) == expected(range(30))
    assert (tl.packets, tl.lost, tl.duplicates) == (30, 0, 0)


def test_timestamp_wrap() -> None:
    tl = timeline()
    packets = stream(100, ts0=(1 << 32) - 160 * 40)
    packets[40], packets[39] = packets[39], packets[40]  # reordered across the wrap
    assert run(tl, packets) == expected(range(100))
    assert tl.reanchors == 1  # only the first packet


def test_renumbered_sequence_counts_a_new_segment() -> None:
    packets = stream(20) + stream(20, seq0=40_000, first=20)
    tl = timeline()
    assert run(tl, packets) == expected(range(40))
    assert (tl.packets, tl.lost) == (40, 0)


def test_timestamp_jump_reanchors_by_wall_clock() -> None:
    # the sender's timestamps jump 10 s ahead while 20 ms pass: placed by arrival instead
    packets = stream(20) + stream(20, ts0=50_000 + 80_000, first=20)
    tl = timeline()
    assert run(tl, packets) == expected(range(40))
    assert tl.reanchors == 2


def test_straggler_from_before_a_jump_is_late() -> None:
    packets = stream(20) + stream(20, ts0=50_000 + 80_000, first=20)
    packets.insert(24, packets.pop(19))  # the last packet before the jump, 80 ms late
    tl = timeline()
    out = run(tl, packets)
    assert out == expected([i for i in range(40) if i != 19])
    assert (tl.late, tl.reanchors) == (1, 2)


def test_expire_keeps_a_packet_ahead_of_the_wall_clock() -> None:
    tl = timeline()
    packets = stream(30)
    out: list[Placed] = []
    for p in packets[:10]:
        out += tl.push(*p)
    s, q, t, pt, pl, arr = packets[10]
    # one packet whose timestamp says 0.5 s later than it is (below the 1 s threshold)
    out += tl.push(s, q, t + 4000, pt, pl, arr)
    out += tl.expire(arr + 0.2)
    for p in packets[11:]:
        out += tl.push(*p)
        out += tl.expire(p[5] + 0.1)
    out += tl.flush()
    assert [o for o in out if o.position < 4000 + 30 * 160] == expected(
        [i for i in range(30) if i != 10]
    )
    assert out[-1].position == 4000 + 10 * 160 + 4000
    assert tl.late == 0


def test_timestamp_jump_back_never_overwrites() -> None:
    packets = stream(20) + stream(20, ts0=50_000 - 8000 * 30, first=20)
    tl = timeline()
    assert run(tl, packets) == expected(range(40))
    assert tl.late == 0


def test_sender_pause_without_timestamp_jump_becomes_silence() -> None:
    # 3 s of silence on the wire, timestamps continuing as if nothing happened
    packets = stream(50) + [
        (s, q, t, pt, pl, arr + 3.0) for s, q, t, pt, pl, arr in stream(50, first=50)
    ]
    tl = timeline()
    out = run(tl, packets)
    assert out[:50] == expected(range(50))
    assert out[50].position == 4000 + 160 * 50 + 3 * 8000
    assert tl.reanchors == 2


def test_small_disagreement_keeps_timestamps() -> None:
    # 0.5 s of wall clock lost by the timestamps: below the 1 s threshold, timestamps win
    packets = stream(50) + [
        (s, q, t, pt, pl, arr + 0.5) for s, q, t, pt, pl, arr in stream(50, first=50)
    ]
    tl = timeline()
    assert run(tl, packets) == expected(range(100))
    assert tl.reanchors == 1


def test_ssrc_change_mid_stream() -> None:
    first = stream(50, ssrc=A)
    # B starts right after A stops, with its own sequence and timestamp bases
    second = stream(50, ssrc=B, seq0=7, ts0=999_999, first=50)
    tl = timeline()
    out = run(tl, first + second)
    assert out == expected(range(100))
    assert tl.ssrcs == [SsrcSpan(A, 4000), SsrcSpan(B, 4000 + 50 * 160)]
    assert (tl.packets, tl.lost, tl.ignored, tl.ssrc_switches) == (100, 0, 0, 1)
    assert tl.ssrc == B


def test_foreign_ssrc_while_the_locked_one_talks_is_ignored() -> None:
    main = stream(50, ssrc=A)
    stray = stream(20, ssrc=B, seq0=9, ts0=5, first=10)
    merged = sorted(main + stray, key=lambda p: p[5])
    tl = timeline()
    assert run(tl, merged) == expected(range(50))
    assert tl.ssrc == A
    tl.restart()
    assert tl.ignored == 20


def test_ssrc_glitch_does_not_switch() -> None:
    packets = stream(50, ssrc=A)
    packets.insert(25, (B, 1, 1, 0, b"\x00" * 160, packets[24][5] + 0.001))
    tl = timeline()
    assert run(tl, packets) == expected(range(50))
    assert tl.ssrc_switches == 0


def test_dtmf_events_one_record_each_and_not_placed() -> None:
    packets = stream(100)
    durations = (160, 320, 480, 640, 800, 800, 800)  # the end packet sent three times

    def event(digit: int, first: int) -> None:
        # RFC 4733: the event's packets take the audio's place in the sequence, all carrying
        # the timestamp of the event's start
        for k, duration in enumerate(durations):
            ssrc, seq, _, _, _, arrival = packets[first + k]
            end = 0x80 if duration == 800 else 0
            body = bytes([digit, end | 10]) + duration.to_bytes(2, "big")
            packets[first + k] = (ssrc, seq, 50_000 + 160 * first, 101, body, arrival)

    event(5, 20)
    event(11, 60)
    tl = timeline()
    out = run(tl, packets)
    assert out == expected([i for i in range(100) if not (20 <= i < 27 or 60 <= i < 67)])
    assert tl.dtmf == [DtmfRecord(4000 + 160 * 20, 5, 800), DtmfRecord(4000 + 160 * 60, 11, 800)]
    assert (tl.dtmf_packets, tl.lost, tl.packets) == (14, 0, 100)


def test_long_dtmf_event_segments_are_merged() -> None:
    tl = timeline()
    run(tl, stream(10))
    ts = 50_000 + 1600
    base = START + 0.2
    for k, dur in enumerate((0xFFFF, 0xFFFF)):  # first segment reaches the maximum
        tl.push(A, 2000 + k, ts, 101, bytes([9, 0]) + dur.to_bytes(2, "big"), base + k * 0.05)
    ts2 = (ts + 0xFFFF) & 0xFFFFFFFF
    tl.push(A, 2002, ts2, 101, bytes([9, 0x80]) + (4000).to_bytes(2, "big"), base + 9)
    assert tl.dtmf == [DtmfRecord(4000 + 1600, 9, 0xFFFF + 4000)]


def test_comfort_noise_places_nothing() -> None:
    packets = stream(60)
    for i in range(20, 40):  # 400 ms of DTX: CN packets (PT 13) instead of audio
        s, q, t, _, _, arr = packets[i]
        packets[i] = (s, q, t, 13, b"\x40", arr)
    tl = timeline()
    out = run(tl, packets)
    assert out == expected([i for i in range(60) if not 20 <= i < 40])
    assert (tl.comfort_noise, tl.lost, tl.late) == (20, 0, 0)


def test_unexpected_payload_type_dropped() -> None:
    packets = stream(10)
    s, q, t, _, pl, arr = packets[4]
    packets[4] = (s, q, t, 8, pl, arr)
    tl = timeline()
    assert run(tl, packets) == expected([0, 1, 2, 3, 5, 6, 7, 8, 9])
    assert tl.unexpected_payload == 1


def test_jitter_follows_rfc3550() -> None:
    rng = random.Random(3)
    packets = [
        (s, q, t, pt, pl, arr + rng.uniform(0, 0.004)) for s, q, t, pt, pl, arr in stream(500)
    ]
    tl = timeline()
    run(tl, packets)
    # the A.8 estimator, computed here in seconds
    j = 0.0
    for k in range(1, len(packets)):
        d = (packets[k][5] - packets[k - 1][5]) - (packets[k][2] - packets[k - 1][2]) / 8000
        j += (abs(d) - j) / 16
    assert tl.jitter_ms == pytest.approx(j * 1000, rel=1e-6)


def test_expire_releases_what_waited_the_window() -> None:
    tl = timeline()
    packets = stream(10)
    out: list[Placed] = []
    for p in packets[:5]:
        out += tl.push(*p)
    out += tl.push(*packets[6])  # 5 is missing: 6 waits
    assert out[-1].position == 4000 + 4 * 160 and tl.held == 1
    # released once its time (by the anchor: its timestamp) is a window in the past
    assert tl.expire(packets[6][5] + 0.05) == []
    assert tl.expire(packets[6][5] + 0.07) == [(4000 + 6 * 160, payload(6))]


def test_restart_places_the_next_packet_by_arrival() -> None:
    tl = timeline()
    out = run(tl, stream(50))
    out += tl.restart()
    # resumed 3 s later; the timestamps continue as if there had been no pause
    out += run(tl, [(s, q, t, pt, pl, arr + 3.0) for s, q, t, pt, pl, arr in stream(50, first=50)])
    assert out[50].position == 4000 + 160 * 50 + 3 * 8000
    assert (tl.packets, tl.lost) == (100, 0)
    assert tl.ssrcs == [SsrcSpan(A, 4000)]


def test_sender_report_offset() -> None:
    tl = timeline()
    run(tl, stream(50))
    # the sender's clock says ts 50_000 + 160*40 was sent at START + 0.8 - 0.03
    tl.sender_report(A, START + 0.8 - 0.03, 50_000 + 160 * 40)
    assert tl.sr_offset == pytest.approx(0.03)
    tl.sender_report(B, 0.0, 0)  # not the recorded SSRC
    assert tl.sender_reports == 1
    assert (tl.sr_offset_median, tl.sr_offset_count) == (pytest.approx(0.03), 1)


def _sr(tl: StreamTimeline, packet: Packet, late: float, ssrc: int = A) -> None:
    """An SR for ``packet``'s timestamp whose NTP time says it was made ``late`` s before the
    file's time of that timestamp."""
    _, _, ts, _, _, _ = packet
    tl.sender_report(ssrc, START + (ts - 50_000) / 8000 - late, ts)


def test_sender_report_median_of_the_last_16() -> None:
    tl = timeline()
    assert (tl.sr_offset_median, tl.sr_offset_count) == (None, 0)
    packets = stream(100)
    run(tl, packets)
    lates = [0.030, 0.031, 0.029, 0.250, 0.030]  # one SR whose NTP time was taken late
    for n, late in enumerate(lates):
        _sr(tl, packets[10 * n], late)
    assert tl.sr_offset == pytest.approx(0.030)  # the latest
    assert tl.sr_offset_median == pytest.approx(0.030)  # robust to the outlier
    assert tl.sr_offset_count == 5
    tl2 = timeline()
    run(tl2, packets)
    _sr(tl2, packets[0], 0.010)
    _sr(tl2, packets[1], 0.020)
    assert tl2.sr_offset_median == pytest.approx(0.015)  # an even count: the middle two
    for n in range(20):  # only the last 16 count
        _sr(tl2, packets[n], 0.5 if n < 4 else 0.04)
    assert (tl2.sr_offset_median, tl2.sr_offset_count) == (pytest.approx(0.04), 16)
    assert tl2.sender_reports == 22


def test_sender_report_offsets_start_again_when_the_mapping_changes() -> None:
    # resume after a pause: the timestamps continue, the next packet is placed by arrival
    tl = timeline()
    run(tl, stream(50))
    for n in range(3):
        _sr(tl, stream(50)[10 * n], 0.030)
    tl.restart()
    after = [(s, q, t, pt, pl, arr + 3.0 + 0.012) for s, q, t, pt, pl, arr in stream(50, first=50)]
    run(tl, after)
    # no SR since: the offsets of the mapping the earlier audio was placed with stand
    assert (tl.sr_offset_median, tl.sr_offset_count) == (pytest.approx(0.030), 3)
    # the first SR of the new mapping replaces them (3.012 s later by the wall clock than the
    # timestamps say, less the 3 s the timestamps did not advance: 12 ms later)
    tl.sender_report(A, START + 3.0 + 1.5 - 0.030, 50_000 + 160 * 75)
    assert (tl.sr_offset_median, tl.sr_offset_count) == (pytest.approx(0.042), 1)


def test_sender_report_offsets_start_again_on_an_ssrc_switch() -> None:
    tl = timeline()
    run(tl, stream(50))
    _sr(tl, stream(50)[10], 0.030)
    _sr(tl, stream(50)[20], 0.030)
    other = stream(20, ssrc=B, ts0=900_000, start=START + 1.5)
    run(tl, other)
    assert tl.ssrc == B
    _sr(tl, stream(50)[20], 0.030)  # A is not recorded any more: ignored
    assert tl.sr_offset_count == 2
    # B's first packet was placed by arrival at START + 1.5; its SR says that sample was
    # made 5 ms before
    tl.sender_report(B, START + 1.5 - 0.005, 900_000)
    assert (tl.sr_offset_median, tl.sr_offset_count) == (pytest.approx(0.005), 1)


def test_opus_duration_from_toc() -> None:
    assert opus_duration(bytes([0x78 | 0])) == 960  # config 15 (hybrid FB 20 ms), code 0
    assert opus_duration(bytes([(26 << 3) | 1])) == 2 * 480  # CELT 10 ms, two frames
    assert opus_duration(bytes([(1 << 3) | 3, 3])) == 3 * 960  # SILK 20 ms, code 3, 3 frames
    assert opus_duration(b"") == 0


def test_opus_positions_in_48k() -> None:
    tl = StreamTimeline(48000, EPOCH, payload_type=111, frame_duration=opus_duration)
    toc = bytes([0x78]) + b"\x00" * 40  # 20 ms frames
    packets = [(A, i, 960 * i, 111, toc, START + 0.02 * i) for i in range(20)]
    packets[5], packets[6] = packets[6], packets[5]
    out = run(tl, packets)
    assert [p.position for p in out] == [24000 + 960 * i for i in range(20)]


# -- property: any permutation within the reorder window gives the same output -----------------


@settings(max_examples=60, deadline=None)
@given(
    delays=st.lists(st.integers(min_value=0, max_value=2), min_size=80, max_size=80),
    dropped=st.sets(st.integers(min_value=1, max_value=78), max_size=8),
    duplicated=st.sets(st.integers(min_value=0, max_value=79), max_size=8),
)
def test_permutations_within_the_window_give_identical_output(
    delays: list[int], dropped: set[int], duplicated: set[int]
) -> None:
    ordered = [p for i, p in enumerate(stream(80)) if i not in dropped]
    reference = run(timeline(), ordered)
    # packet i leaves at slot i + delay (< window of 3 slots); the first stays first
    keyed = [(0 if i == 0 else i + delays[i], i, p) for i, p in enumerate(stream(80))]
    keyed += [(i + delays[i] + 1, i, p) for i, p in enumerate(stream(80)) if i in duplicated]
    arrival_order = [p for _, i, p in sorted(keyed) if i not in dropped]
    shuffled = [
        (s, q, t, pt, pl, START + PTIME * k) for k, (s, q, t, pt, pl, _) in enumerate(arrival_order)
    ]
    tl = timeline()
    out = run(tl, shuffled)
    assert out == reference
    check_order(out)
    assert tl.late == 0
    assert tl.lost == len(dropped)


# -- speed --------------------------------------------------------------------------------------


def test_per_packet_cost() -> None:
    n = 20_000
    tl = timeline()
    body = b"\xff" * 160
    fields = [(A, i & 0xFFFF, 160 * i, 0, body, START + PTIME * i) for i in range(n)]
    push = tl.push
    best = float("inf")
    for _ in range(3):
        tl = timeline()
        push = tl.push
        t0 = time.perf_counter()
        for f in fields:
            push(*f)
        best = min(best, time.perf_counter() - t0)
    per_packet = best / n * 1e6
    print(f"StreamTimeline.push: {per_packet:.2f} µs/packet")
    assert per_packet < 20  # generous: only catches an accidental slow path on every packet


# -- gaps ------------------------------------------------------------------------------------


def test_a_loss_burst_of_100_ms_or_more_is_a_gap_shorter_ones_are_not() -> None:
    tl = timeline()
    packets = stream(100)
    lost = set(range(10, 14)) | set(range(40, 50))  # 80 ms, then 200 ms
    run(tl, [p for i, p in enumerate(packets) if i not in lost])
    assert tl.gaps == [(4000 + 160 * 40, 4000 + 160 * 50)]
    assert (tl.gap_count, tl.gap_length) == (1, 1600)


def test_the_sender_stopping_is_a_gap_a_late_start_is_not() -> None:
    tl = timeline()
    # first packet 0.5 s after the epoch (not a gap), then 3 s of nothing, timestamps going on
    run(tl, stream(20) + stream(20, first=170))
    assert tl.gaps == [(4000 + 160 * 20, 4000 + 160 * 170)]
    # and the same with timestamps that stop (a sender that froze its clock): re-anchored
    tl = timeline()
    later = [(s, q, t - 150 * 160, pt, p, a) for s, q, t, pt, p, a in stream(20, first=170)]
    run(tl, stream(20) + later)
    assert tl.reanchors == 2 and len(tl.gaps) == 1
    assert tl.gaps[0][1] - tl.gaps[0][0] == pytest.approx(150 * 160, abs=2)


def test_a_pause_or_comfort_noise_explains_the_hole() -> None:
    tl = timeline()
    out = run(tl, stream(20))
    tl.restart()  # resume after a pause
    out += run(tl, stream(20, first=200, ssrc=B))
    assert tl.gaps == [] and len(out) == 40
    # DTX: comfort noise, then 1 s without packets
    tl = timeline()
    packets = stream(100)
    cn = (A, 1020, 50_000 + 160 * 20, 13, b"\x40", START + 20 * PTIME)
    run(tl, packets[:20] + [cn] + [(s, q + 1, t, pt, p, a) for s, q, t, pt, p, a in packets[70:]])
    assert tl.gaps == [] and tl.comfort_noise == 1
    # but only the hole right after it
    tl = timeline()
    run(tl, [*packets[:20], cn, *packets[20:40], *packets[60:]])
    assert tl.gaps == [(4000 + 160 * 40, 4000 + 160 * 60)]


def test_a_run_continuing_the_files_of_a_crashed_one_notes_the_downtime() -> None:
    tl = timeline(start=8000)  # the previous run wrote up to 1 s
    run(tl, stream(10, start=EPOCH + 3.6))
    assert tl.gaps == [(8000, 3.6 * 8000)]
    assert timeline(start=0).gaps == []


def test_gaps_listed_are_capped_but_counted() -> None:
    tl = timeline(gap_min=160)
    packets = stream(2 * 150)
    run(tl, packets[::2])  # every other packet lost: 149 holes of 20 ms
    assert tl.gap_count == 149 and len(tl.gaps) == 100
    assert tl.gap_length == 149 * 160


def test_unexpected_payload_types_are_counted_per_type() -> None:
    tl = timeline()
    packets = stream(6)
    odd = [(s, q, t, 96 if i % 2 else 4, p, a) for i, (s, q, t, _, p, a) in enumerate(packets)]
    run(tl, odd)
    assert tl.unexpected_payload == 6 and tl.unexpected_types == {96: 3, 4: 3}


@pytest.mark.parametrize("leap", [0.9, 0.45, 0.3, 5.0])
def test_timestamps_leaping_ahead_cannot_grow_the_file_faster_than_the_call(leap: float) -> None:
    """A sender whose timestamps jump ``leap`` s a packet (an attacker, a broken SRC) for 10 s:
    the positions written cover about 10 s, not 10 s x leap / 20 ms."""
    tl = timeline()
    packets = [
        (
            A,
            1000 + i,
            (50_000 + round(8000 * leap) * i) & 0xFFFFFFFF,
            0,
            payload(i),
            START + PTIME * i,
        )
        for i in range(500)
    ]
    out = run(tl, packets)
    check_order(out)
    assert len(out) == 500  # no audio dropped
    end = out[-1].position + 160
    covered = (end - out[0].position) / 8000
    assert covered == pytest.approx(10.0, rel=0.1), covered


def test_a_real_gap_in_time_is_still_silence() -> None:
    """Timestamps that jump with the wall clock (DTX, a sender's pause, loss) keep their gap."""
    tl = timeline()
    first = stream(50)
    later = stream(50, first=150, start=START)  # 2 s later by timestamp and by arrival
    out = run(tl, first + later)
    assert [p.position for p in out] == [4000 + 160 * i for i in (*range(50), *range(150, 200))]
    assert tl.reanchors == 1  # the first packet only
