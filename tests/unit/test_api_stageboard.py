"""Stage counters and the api's board of stage heartbeats, with no I/O."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, generate_latest

from townhall.api.stageboard import StageBoard, StageCollector, families
from townhall.api.whip import stage_gone
from townhall.bus.messages import StageHeartbeat, decode_heartbeat, encode
from townhall.media.playout import Playout
from townhall.stage.counters import ClockWatch, Tally, stage_report


def test_clock_watch_counts_late_ticks_and_keeps_the_worst_per_window() -> None:
    tally, watch = Tally(), ClockWatch()
    for late in (-0.001, 0.005, 0.021, 0.150, 0.0):
        watch.tick(tally, late)
    assert (tally.ticks, tally.late_frames) == (5, 2)
    assert watch.take_worst() == 0.150
    watch.tick(tally, 0.002)
    assert watch.take_worst() == 0.002


def test_tally_folds_playouts_and_adds() -> None:
    p = Playout()
    p.recovered, p.concealed, p.jitter.lost, p.resent = 3, 4, 7, 2
    a = Tally(ticks=10, late_frames=1)
    a.add_playout(p)
    b = Tally(ticks=5)
    b.add(a)
    assert b == Tally(ticks=15, late_frames=1, fec_recovered=3, plc_frames=4, lost_packets=7,
                      resent_packets=2)
    report = stage_report("n1", ["s2", "s1"], 2, b, -0.001, 123.0)
    assert report == StageHeartbeat("n1", ["s1", "s2"], speakers=2, ticks=15,
                                    jitter_target_ms=0.0, late_frames=1, max_late_ms=0.0,
                                    fec_recovered=3, plc_frames=4, lost_packets=7,
                                    resent_packets=2, at=123.0)
    assert decode_heartbeat(encode(report)) == report


def test_board_keeps_latest_per_node_and_drops_silent_ones() -> None:
    board = StageBoard(stale_s=10)
    board.update(StageHeartbeat("a", ticks=50), now=100.0)
    board.update(StageHeartbeat("b", ticks=7), now=101.0)
    board.update(StageHeartbeat("a", ticks=100), now=101.0)
    assert [(r.ticks, age) for r, age in board.current(102.0)] == [(100, 1.0), (7, 1.0)]
    board.update(StageHeartbeat("a", ticks=150), now=108.0)
    assert [r.node for r, _ in board.current(111.5)] == ["a"]  # b silent 10.5 s
    assert board.current(200.0) == []


def test_exported_names_and_labels() -> None:
    board = StageBoard()
    board.update(decode_heartbeat(
        b'{"node": "st-1", "spaces": ["x"], "speakers": 2, "ticks": 500, "late_frames": 3,'
        b' "max_late_ms": 12.5, "fec_recovered": 4, "plc_frames": 5, "lost_packets": 9,'
        b' "resent_packets": 6, "at": 1.0, "jitter_target_ms": 60, "max_spaces": 100,'
        b' "cpu": 0.25, "draining": true}'), now=time.monotonic())
    registry = CollectorRegistry()
    registry.register(StageCollector(board))
    text = generate_latest(registry).decode()
    for line in ('townhall_stage_ticks_total{node="st-1"} 500.0',
                 'townhall_stage_late_frames_total{node="st-1"} 3.0',
                 'townhall_stage_fec_recovered_total{node="st-1"} 4.0',
                 'townhall_stage_plc_frames_total{node="st-1"} 5.0',
                 'townhall_stage_lost_packets_total{node="st-1"} 9.0',
                 'townhall_stage_resent_packets_total{node="st-1"} 6.0',
                 'townhall_stage_speakers{node="st-1"} 2.0',
                 'townhall_stage_max_late_ms{node="st-1"} 12.5',
                 'townhall_stage_jitter_target_ms{node="st-1"} 60.0',
                 'townhall_stage_max_spaces{node="st-1"} 100.0',
                 'townhall_stage_cpu{node="st-1"} 0.25',
                 'townhall_stage_draining{node="st-1"} 1.0'):
        assert line in text, line
    assert "townhall_stage_report_age_seconds{node=\"st-1\"}" in text
    assert all(not f.samples for f in families([]))


def test_board_tells_a_silent_stage_and_who_mixes_a_space() -> None:
    board = StageBoard()
    assert board.silent_for("a", now=50.0) == 0.0  # not listening yet: it can tell nothing
    board.listening_since = 100.0
    assert board.silent_for("a", now=101.5) == 1.5  # never heard: since listening began
    board.update(StageHeartbeat("a", ["s1"]), now=102.0)
    board.update(StageHeartbeat("b", ["s2"]), now=102.5)
    assert board.silent_for("a", now=104.5) == 2.5
    assert board.mixer("s1", now=103.0) == "a"
    assert board.mixer("s1", now=104.5) is None  # its heartbeat is older than 2 s
    assert board.mixer("s3", now=103.0) is None
    board.update(StageHeartbeat("b", ["s1", "s2"]), now=103.0)  # a takeover: both list s1
    assert board.mixer("s1", now=103.5) == "b"


def test_an_offer_is_given_up_once_its_stage_is_silent_2_s() -> None:
    board = StageBoard(listening_since=0.0)
    board.update(StageHeartbeat("a"), now=10.0)
    assert stage_gone(board, b"a", now=11.9) is None
    refusal = stage_gone(board, b"a", now=12.1)
    assert refusal is not None and (refusal.status, refusal.instance_slug) == (503, "no-stage")
    assert refusal.retry_after == 1
    assert stage_gone(board, b"ghost", now=1.0) is None
    assert stage_gone(board, b"ghost", now=2.5) is not None
