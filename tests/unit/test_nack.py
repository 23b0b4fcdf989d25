"""Asking speakers for lost packets (RTCP generic NACK): which, when, how often, and the
SDP that turns it on. Time is passed in; nothing sleeps."""

from __future__ import annotations

import numpy as np

from townhall.cli.speak import offer_nack
from townhall.media.chunk import FRAME_SAMPLES
from townhall.media.nack import NackList
from townhall.media.opus import OpusEncoder
from townhall.media.playout import Playout
from townhall.stage.ingest import nack_types, with_nack


def test_a_gap_is_asked_for_at_once_then_retried_then_given_up() -> None:
    nl = NackList(retry_s=0.03, tries=2)
    assert not nl.arrived(10) and nl.due(0.0) == []
    assert not nl.arrived(13)
    assert nl.due(0.0) == [11, 12]
    assert nl.due(0.01) == []            # not before retry_s
    assert nl.due(0.031) == [11, 12]     # a lost request or a lost resend
    assert nl.due(0.07) == []            # asked twice: given up
    assert nl.asked == 4 and not nl.arrived(11)  # no longer waited for


def test_a_resend_is_told_apart_from_a_new_packet() -> None:
    nl = NackList()
    nl.arrived(1)
    nl.arrived(3)
    assert nl.due(0.0) == [2]
    assert nl.arrived(2) and nl.answered == 1
    assert not nl.arrived(2)              # the duplicate is not answered twice
    assert nl.due(1.0) == []


def test_old_gaps_and_huge_jumps_stay_within_the_horizon() -> None:
    nl = NackList(horizon=10, burst=20)
    nl.arrived(0)
    nl.arrived(1000)                      # a jump: only what could still play is asked
    assert nl.due(0.0) == list(range(991, 1000))
    nl.arrived(1030)                      # those are behind the horizon now
    assert nl.due(1.0) == list(range(1021, 1030))


def test_sequence_numbers_wrap() -> None:
    nl = NackList()
    nl.arrived(65534)
    nl.arrived(1)
    assert nl.due(0.0) == [65535, 0]
    assert nl.arrived(0)


def test_asks_are_budgeted_on_a_congested_uplink() -> None:
    nl = NackList(share=0.25, burst=4)
    asked = 0
    for k in range(200):                  # every other packet lost
        nl.arrived(2 * k)
        asked += len(nl.due(k * 0.04))
    assert asked <= 4 + 0.25 * 200 + 1, asked
    assert asked >= 0.25 * 200 - 1, asked


def test_a_resend_in_time_plays_and_is_counted() -> None:
    # A packet with sound: a digital-silence packet is not decoded at all (the tick gets
    # nothing: media/silence.py), and this checks that the resent one plays.
    tone = np.sin(np.arange(FRAME_SAMPLES) * 2 * np.pi * 440 / 48_000) * 8000
    packet = OpusEncoder().encode(tone.astype(np.int16))
    p = Playout(nack=NackList())
    assert p.push(1, packet, 0.0) == []
    assert p.push(3, packet, 0.04) == [2]
    assert p.push(2, packet, 0.041) == []
    assert (p.resent, p.jitter.late) == (1, 0)
    slots = [p.pull() for _ in range(3)]
    assert all(isinstance(s, np.ndarray) for s in slots)
    assert (p.jitter.lost, p.recovered, p.concealed) == (0, 0, 0)
    assert Playout().push(1, packet, 0.0) == []   # no NackList: never asks


OFFER = ("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96 0\r\na=rtpmap:96 opus/48000/2\r\n"
         "a=rtpmap:0 PCMU/8000\r\nm=video 9 UDP/TLS/RTP/SAVPF 97\r\n"
         "a=rtpmap:97 VP8/90000\r\na=rtcp-fb:97 nack\r\na=rtcp-fb:97 nack pli\r\n")


def test_the_speaker_offers_nack_on_opus_and_the_answer_echoes_it() -> None:
    assert nack_types(OFFER) == {97}      # "nack pli" is not generic NACK
    offer = offer_nack(OFFER)
    assert "a=rtpmap:96 opus/48000/2\r\na=rtcp-fb:96 nack\r\n" in offer
    assert nack_types(offer) == {96, 97}
    assert offer_nack(offer) == offer     # once
    assert with_nack(OFFER, set()) == OFFER


def test_nothing_is_asked_while_the_round_trip_is_too_long() -> None:
    nl = NackList(max_rtt_s=0.08)
    nl.arrived(1)
    nl.arrived(3)
    assert nl.due(0.0, rtt_s=0.2) == []   # a resend would come after its slot played
    nl.arrived(5)
    assert nl.due(0.1, rtt_s=0.03) == [4]  # 2 was dropped, not asked for late
    assert nl.asked == 1


def test_a_new_gap_is_asked_for_before_old_ones_are_retried() -> None:
    nl = NackList(share=0.0, burst=2)     # budget for two asks, never refilled
    nl.arrived(1)
    nl.arrived(3)
    assert nl.due(0.0) == [2]
    nl.arrived(5)
    assert nl.due(0.05) == [4]            # 2's retry waits: 4 was never asked for
    assert nl.due(0.1) == []
