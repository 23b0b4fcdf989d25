"""A takeover's first chunk number (stage.numbering), with no I/O: never at or below
anything an earlier owner could have published, and no gap when everything was stored."""

from __future__ import annotations

from townhall.bus.messages import StageHeartbeat, decode_heartbeat, encode
from townhall.media.chunk import Chunk
from townhall.stage.numbering import SKEW_US, Ahead, RivalReports, first_number

CHUNK = 4800          # 5 × 20 ms at 48 kHz
CHUNK_US = 100_000
T0 = 1_800_000_000_000_000  # a wall clock in microseconds


def stored(seq: int, sent_us: int = T0) -> Chunk:
    return Chunk(seq=seq, pts=seq * CHUNK, sent_us=sent_us, packets=(b"x",) * 5)


def test_an_ordinary_takeover_continues_right_after_the_stored_chunk() -> None:
    # The old owner died 3 s before: all it published was stored, so no number is skipped.
    assert first_number(stored(200), None, T0 + 3_000_000, chunk_samples=CHUNK) == \
        (201, 201 * CHUNK)


def test_nothing_stored_nothing_reported_keeps_the_stage_s_own_numbering() -> None:
    assert first_number(None, None, T0, chunk_samples=CHUNK) is None


def test_unstored_chunks_the_old_owner_reported_are_never_numbered_again() -> None:
    # Stored up to 200, but listeners heard 237 (sent unstored while MEDIA elected), reported
    # 1 s before the takeover: the old owner may have gone on for that second too.
    ahead = Ahead(seq=237, pts=237 * CHUNK, sent_us=T0)
    now = T0 + 1_000_000
    seq, pts = first_number(stored(200), ahead, now, chunk_samples=CHUNK) or (0, 0)
    could = 237 + (now - T0 + SKEW_US) // CHUNK_US  # its clock's 10 chunks a second
    assert seq == could + 1
    assert seq > 247  # past all it could have sent in that second
    assert pts == seq * CHUNK  # pts moves with the number: the gap is whole chunks


def test_a_report_below_the_stored_chunk_changes_nothing() -> None:
    # The report is old: the stream has since stored chunks far past it.
    ahead = Ahead(seq=100, pts=100 * CHUNK, sent_us=T0)
    assert first_number(stored(200), ahead, T0 + 1_000_000, chunk_samples=CHUNK) == \
        (201, 201 * CHUNK)


def test_a_report_with_nothing_stored_still_sets_the_floor() -> None:
    ahead = Ahead(seq=40, pts=40 * CHUNK, sent_us=T0)
    seq, _ = first_number(None, ahead, T0, chunk_samples=CHUNK) or (0, 0)
    assert seq == 40 + SKEW_US // CHUNK_US + 1


def test_an_old_owner_still_storing_gets_one_more_number_skipped() -> None:
    # Its next chunk is refused by the stream but still reaches plain subscribers: ours must
    # not carry the same number.
    assert first_number(stored(200), None, T0, chunk_samples=CHUNK, contested=True) == \
        (202, 202 * CHUNK)


def test_a_clock_behind_the_report_still_numbers_past_it() -> None:
    # The new owner's wall clock is behind the old owner's: elapsed is negative.
    ahead = Ahead(seq=237, pts=237 * CHUNK, sent_us=T0)
    seq, _ = first_number(stored(200), ahead, T0 - 2_000_000, chunk_samples=CHUNK) or (0, 0)
    assert seq == 238


def test_heartbeat_lists_are_read_strictly() -> None:
    assert Ahead.from_list([1, 2, 3]) == Ahead(1, 2, 3)
    assert Ahead.from_list([1, 2]) is None
    assert Ahead.from_list([1, -2, 3]) is None
    assert Ahead(1, 2, 3).as_list() == [1, 2, 3]


def test_reports_keep_the_highest_until_we_store_past_them_or_the_space_ends() -> None:
    book = RivalReports()
    book.heard("b", ["s1"], {"s1": [237, 0, T0]}, now=10.0)
    book.heard("b", ["s1"], {"s1": [230, 0, T0]}, now=10.5)  # reordered or older
    assert book.floor("s1") == Ahead(237, 0, T0)
    # b lost the Space (no longer listed), or took it again and stores everything: the
    # report stays (in the run b took it again numbered below 237, all stored).
    book.heard("b", [], {}, now=11.0)
    book.heard("b", ["s1"], {}, now=12.0)
    assert book.floor("s1") == Ahead(237, 0, T0)
    book.note("s1", Ahead(300, 0, T0))  # ours, for a Space we gave up
    assert book.floor("s1") == Ahead(300, 0, T0)
    book.forget("s1")
    assert book.floor("s1") is None
    assert book.last_heard() == 12.0


def test_a_report_a_later_owner_already_stored_past_is_not_numbered_from_again() -> None:
    # b reported 237 unstored; c took over and stored 290 two seconds later: c's numbers
    # are past b's already, so a third owner continues after 290, no gap.
    ahead = Ahead(seq=237, pts=237 * CHUNK, sent_us=T0)
    later = stored(290, sent_us=T0 + 2_000_000)
    assert first_number(later, ahead, T0 + 6_000_000, chunk_samples=CHUNK) == \
        (291, 291 * CHUNK)
    # A stored chunk from before the report (the stream stopped storing at 200) is not.
    seq, _ = first_number(stored(200, sent_us=T0 - 3_000_000), ahead, T0 + 1_000_000,
                          chunk_samples=CHUNK) or (0, 0)
    assert seq > 247


def test_who_still_mixes_a_space_counts_only_recent_non_draining_heartbeats() -> None:
    book = RivalReports()
    book.heard("b", ["s1"], {}, now=10.0)
    assert book.mixed_by("s1", now=11.0, within_s=1.5) == "b"
    assert book.mixed_by("s1", now=11.6, within_s=1.5) is None  # b went quiet: cut off, dead
    assert book.mixed_by("s2", now=10.0, within_s=1.5) is None
    book.heard("b", ["s1"], {}, now=12.0, draining=True)  # handing its Spaces over
    assert book.mixed_by("s1", now=12.0, within_s=1.5) is None


def test_the_heartbeat_carries_the_reports_there_and_back() -> None:
    beat = StageHeartbeat("st", ["s1", "s2"], ahead={"s1": [237, 237 * CHUNK, T0]})
    back = decode_heartbeat(encode(beat))
    assert back == beat
    assert Ahead.from_list(back.ahead["s1"]) == Ahead(237, 237 * CHUNK, T0)
    assert decode_heartbeat(b'{"node": "old"}').ahead == {}  # an older stage: none


def test_our_own_run_given_up_is_numbered_past_exactly_no_gap() -> None:
    # Our own record of a Space we gave up: we know we stopped at 237, so taking it again
    # (the only stage left, after our NATS node died) numbers 238, not 238 + the time since.
    ahead = Ahead(seq=237, pts=237 * CHUNK, sent_us=T0, final=True)
    assert first_number(stored(200), ahead, T0 + 5_000_000, chunk_samples=CHUNK) == \
        (238, 238 * CHUNK)
