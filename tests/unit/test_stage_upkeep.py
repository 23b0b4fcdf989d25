"""When an owner whose lease renewals go unanswered gives its Space up (stage.upkeep)."""

from __future__ import annotations

from townhall.stage.upkeep import Upkeep

U = Upkeep(lease_ttl_s=3.0, heard_within_s=1.5, unrenewed_max_s=15.0)


def test_a_stage_cut_off_gives_up_when_its_lease_may_have_expired() -> None:
    # Renewed at 100, stored at 100.5, no rival heard since: nothing works any more.
    assert not U.give_up(103.4, renewed=100.0, stored=100.5, heard=100.2)
    assert U.give_up(103.5, renewed=100.0, stored=100.5, heard=100.2)


def test_chunks_still_stored_keep_the_space_through_a_leases_bucket_election() -> None:
    assert not U.give_up(106.0, renewed=100.0, stored=105.9, heard=None)
    assert U.give_up(109.0, renewed=100.0, stored=105.9, heard=None)  # stores stopped too


def test_rivals_still_heard_keep_it_while_media_elects_too() -> None:
    # Neither renewals nor stores for 8 s, but the other stages' heartbeats arrive: the
    # cluster is re-electing, and they hear our heartbeat saying we mix the Space.
    assert not U.give_up(108.0, renewed=100.0, stored=100.0, heard=107.2)
    assert U.give_up(108.0, renewed=100.0, stored=100.0, heard=106.4)  # no longer heard


def test_however_well_the_rest_works_an_unrenewed_lease_is_given_up_in_the_end() -> None:
    assert not U.give_up(114.9, renewed=100.0, stored=114.8, heard=114.8)
    assert U.give_up(115.0, renewed=100.0, stored=114.8, heard=114.8)


def test_before_the_clock_runs_only_the_lease_counts() -> None:
    # Taking the Space over (no store of ours yet): hearing rivals proves nothing of it.
    assert not U.give_up(102.9, renewed=100.0, stored=None, heard=102.8)
    assert U.give_up(103.0, renewed=100.0, stored=None, heard=102.8)
