"""The speaker's bitrate adapter, driven by simulated receiver reports (time passed in)."""

from __future__ import annotations

from collections.abc import Callable

from townhall.client.bitrate import BitrateAdapter, FecSizer, packet_ms, wire_bps

Link = Callable[[int, float], tuple[float, float]]  # (bitrate, now) -> (loss, rtt)


def bottleneck(kbps: float, rtt_s: float = 0.02, queue_s: float = 0.2) -> Link:
    """A drop-tail bottleneck: what does not fit is lost, and its queue is full then."""
    def link(bitrate: int, now: float) -> tuple[float, float]:
        offered = wire_bps(bitrate)
        loss = max(0.0, 1 - kbps * 1000 / offered)
        return loss, rtt_s + (queue_s if loss > 0 else 0.0)
    return link


def random_loss(p: float, rtt_s: float = 0.02) -> Link:
    return lambda bitrate, now: (p, rtt_s)


def drive(adapter: BitrateAdapter, link: Link, seconds: float,
          start: float = 0.0, every: float = 1.0) -> list[tuple[float, int]]:
    """Reports every ``every`` s for ``seconds``; the (time, bitrate) of each change."""
    changes = []
    t = start
    while t < start + seconds:
        loss, rtt = link(adapter.bitrate, t)
        new = adapter.report(loss, rtt, t)
        if new is not None:
            changes.append((t, new))
        t += every
    return changes


def test_clean_link_stays_at_the_maximum() -> None:
    adapter = BitrateAdapter(max_bitrate=64_000)
    assert drive(adapter, random_loss(0.0), 120) == []
    assert adapter.bitrate == 64_000


def test_bottleneck_steps_down_until_the_loss_is_gone() -> None:
    adapter = BitrateAdapter(max_bitrate=64_000)
    changes = drive(adapter, bottleneck(40), 30)
    rates = [rate for _, rate in changes]
    # Straight to the rate that what got through would carry, confirmed by one report.
    assert changes[0] == (2.0, 16_000)
    assert bottleneck(40)(16_000, 0)[0] == 0
    # Later it tries 24 kbit/s again after a clean stretch, and comes back.
    assert rates[1:] == [24_000, 16_000]
    assert adapter.bitrate == 16_000


def test_a_confirmed_trial_with_loss_left_goes_on_down() -> None:
    adapter = BitrateAdapter(max_bitrate=64_000)
    got = [adapter.report(loss, 0.2, float(t))
           for t, loss in enumerate([0.0, 0.7, 0.7, 0.7, 0.3, 0.3])]
    # 16 kbit/s carries 2.3 times the packets through that 64 did (a bottleneck), but 30 %
    # is still lost: on to the rate that fits what got through.
    assert got == [None, None, 16_000, None, None, 8_000]


def test_once_a_bottleneck_is_known_a_little_loss_goes_on_down() -> None:
    adapter = BitrateAdapter(max_bitrate=64_000)
    got = [adapter.report(loss, 0.2, float(t))
           for t, loss in enumerate([0.0, 0.7, 0.7, 0.7, 0.0, 0.05, 0.05])]
    assert got[:5] == [None, None, 16_000, None, None]  # confirmed by one clean report
    # 5 % would not start a trial on a link with no bottleneck known (below); here it does.
    assert got[5:] == [None, 12_000]
    fresh = BitrateAdapter(max_bitrate=64_000)
    assert [fresh.report(0.05, 0.2, float(t)) for t in range(10)] == [None] * 10


def test_bottleneck_below_every_rate_ends_at_the_lowest() -> None:
    adapter = BitrateAdapter(max_bitrate=64_000)
    rates = [rate for _, rate in drive(adapter, bottleneck(14), 40)]
    assert rates == [8_000]


def test_the_lowest_steps_send_60_ms_packets_and_fit_a_24_kbit_bottleneck() -> None:
    # In 20 ms packets even 8 kbit/s takes ~31 kbit/s on the wire; in 60 ms, 16 fits.
    assert packet_ms(24_000) == 20 and packet_ms(16_000) == packet_ms(8_000) == 60
    assert wire_bps(16_000) < 24_000 < 8_000 + 58 * 8 * 50
    adapter = BitrateAdapter(max_bitrate=64_000)
    changes = drive(adapter, bottleneck(24), 60)
    assert changes[0] == (2.0, 16_000)
    # It tries 24 kbit/s (20 ms packets) after clean stretches, and comes back at once.
    assert {rate for _, rate in changes} == {16_000, 24_000}
    ups = [t for t, rate in changes if rate == 24_000]
    assert len(ups) >= 2 and ups[1] - ups[0] > 10


def test_random_loss_trial_is_undone_and_retried_later() -> None:
    # A round trip too long for resends on NACK (the stage does not ask): a trial.
    adapter = BitrateAdapter(max_bitrate=64_000)
    changes = drive(adapter, random_loss(0.15, rtt_s=0.1), 60)
    assert changes[0][1] == 40_000
    assert changes[1][1] == 64_000  # the lower rate did not help: back
    assert adapter.bitrate == 64_000
    # After the undone trial, the next waits the holdoff (20 s), then twice as long.
    downs = [t for t, rate in changes if rate == 40_000]
    assert len(downs) == 2
    assert downs[1] - downs[0] >= 20
    assert sum(1 for _, rate in changes if rate < 64_000) <= 2


def test_loss_that_resends_repair_starts_no_trial() -> None:
    # The stage's reports say what the link lost, resends included: 15 % random loss
    # near the stage (resends come back within a frame) is no reason to send less.
    adapter = BitrateAdapter(max_bitrate=64_000)
    assert drive(adapter, random_loss(0.15, rtt_s=0.02), 120) == []
    # Past what resends repair (each is lost as often), it is tried as before.
    assert drive(adapter, random_loss(0.3, rtt_s=0.02), 10, start=120)[0][1] < 64_000


def test_a_queue_filling_below_the_nack_limit_is_not_taken_for_repair() -> None:
    adapter = BitrateAdapter(max_bitrate=64_000)
    adapter.report(0.0, 0.01, 0.0)
    adapter.report(0.12, 0.05, 1.0)         # round trip up 40 ms: a queue, not Wi-Fi
    assert adapter.report(0.12, 0.06, 2.0) == 40_000


def test_drained_queue_confirms_a_trial_even_if_the_loss_barely_moved() -> None:
    adapter = BitrateAdapter(max_bitrate=64_000)
    losses = iter([0.12, 0.12, 0.12, 0.02, 0.02])
    rtts = iter([0.25, 0.25, 0.25, 0.05, 0.05])
    for t in range(5):
        adapter.report(next(losses), next(rtts), float(t))
    assert adapter.bitrate == 40_000


def test_steps_back_up_after_a_clean_stretch_and_backs_off_when_it_fails() -> None:
    adapter = BitrateAdapter(max_bitrate=64_000)
    link = bottleneck(66)  # fits 40 kbit/s, not 64
    changes = drive(adapter, link, 100)
    assert changes[0][1] == 40_000
    ups = [t for t, rate in changes if rate == 64_000]
    downs = [t for t, rate in changes if rate == 40_000]
    assert len(ups) >= 2
    # A failed step up is undone within a few reports, and the next waits longer.
    assert all(0 < d - u <= 4 for u, d in zip(ups, downs[1:], strict=False))
    gaps = [ups[i + 1] - downs[i + 1] for i in range(len(ups) - 1)]
    assert gaps == sorted(gaps) and gaps[-1] > gaps[0]
    assert adapter.bitrate in (40_000, 64_000)


def test_link_that_clears_returns_to_the_maximum() -> None:
    adapter = BitrateAdapter(max_bitrate=64_000)
    drive(adapter, bottleneck(14), 30)
    assert adapter.bitrate == 8_000
    drive(adapter, random_loss(0.0), 80, start=30)
    assert adapter.bitrate == 64_000


def test_reports_covering_the_old_rate_are_not_counted() -> None:
    adapter = BitrateAdapter(max_bitrate=64_000)
    adapter.report(0.15, 0.2, 0.0)
    adapter.report(0.15, 0.2, 1.0)
    assert adapter.report(0.15, 0.2, 2.0) == 40_000
    # Arrived 0.1 s after the switch: it covers 64 kbit/s time; so does the next (the
    # queue had not drained when its interval began). Then two reports judge the trial.
    assert adapter.report(0.0, 0.02, 2.1) is None
    assert adapter.report(0.0, 0.02, 3.0) is None
    assert adapter.report(0.15, 0.2, 4.0) is None
    assert adapter.report(0.15, 0.2, 5.0) == 64_000  # no better at 40: undone


def test_bitrate_below_the_steps_and_a_lower_maximum() -> None:
    adapter = BitrateAdapter(max_bitrate=32_000)
    assert adapter.bitrate == 32_000
    drive(adapter, bottleneck(10), 40)
    assert adapter.bitrate == 8_000
    assert BitrateAdapter(max_bitrate=8_000).bitrate == 8_000



def fec_levels(sizer: FecSizer, losses: list[float], start: float = 0.0) -> list[int]:
    """The FEC level after each of ``losses``, reported once a second from ``start``."""
    out = []
    for i, loss in enumerate(losses):
        sizer.report(loss, start + i)
        out.append(sizer.level)
    return out


STEPS4 = (5, 10, 20, 30)  # the mechanism with more levels than the default's two


def test_fec_goes_up_at_once_to_the_level_above_the_loss() -> None:
    assert FecSizer().level == 10  # until the stage reports
    assert fec_levels(FecSizer(levels=STEPS4), [0.12]) == [20]
    assert fec_levels(FecSizer(levels=STEPS4), [0.10, 0.21, 0.5]) == [10, 30, 30]
    assert FecSizer(start=15, levels=STEPS4).level == 20
    assert FecSizer(start=90, levels=STEPS4).level == 30
    # The default: 10 on any loss past 5 %, whatever it is.
    assert fec_levels(FecSizer(), [0.0, 0.06, 0.5]) == [10, 10, 10]


def test_fec_comes_down_a_level_after_a_stretch_of_less() -> None:
    sizer = FecSizer(levels=STEPS4)
    levels = fec_levels(sizer, [0.25] + [0.0] * 35)
    assert levels[0] == 30
    # One level per 10 s of reports below three quarters of the level under it.
    assert levels.index(20) == 11 and levels.index(10) == 21 and levels[-1] == 5
    assert min(levels) == 5  # never off: loss comes unannounced


def test_fec_hysteresis_loss_near_a_level_does_not_flip_it() -> None:
    sizer = FecSizer(levels=STEPS4)
    # At 20 after a 12 % report; 8-10 % is above 3/4 of 10: it stays.
    levels = fec_levels(sizer, [0.12] + [0.08, 0.10, 0.09] * 20)
    assert set(levels) == {20}
    # One report above the margin restarts the stretch needed to come down.
    sizer = FecSizer(levels=STEPS4)
    levels = fec_levels(sizer, [0.12] + [0.05] * 8 + [0.09] + [0.05] * 8)
    assert set(levels) == {20}
    assert fec_levels(sizer, [0.05] * 3, start=18)[-1] == 10


def test_the_adapter_sizes_fec_from_the_same_reports() -> None:
    adapter = BitrateAdapter(max_bitrate=64_000)
    assert adapter.expected_loss == 10
    # 15 % near the stage: resends repair it, no rate change, but FEC is raised.
    drive(adapter, random_loss(0.0), 12)
    assert adapter.expected_loss == 5  # a clean link: the bits go to the audio
    # 15 % near the stage: resends repair it, no rate change, but FEC is back at once.
    assert drive(adapter, random_loss(0.15, rtt_s=0.02), 5, start=12) == []
    assert adapter.bitrate == 64_000 and adapter.expected_loss == 10


def _quietest_at_switch(retune: bool, low: int = 16_000) -> float:
    """A steady tone encoded at 64 kbit/s switching to ``low`` (16 kbit/s: 60 ms packets)
    and back every 0.48 s (by ``SpeakerEncoder.retune``, or by a fresh encoder), decoded
    by one decoder as the stage does: the quietest 2.5 ms around the switches, relative
    to the tone's level."""
    import fractions

    import av
    import numpy as np

    from townhall.cli.speak import SpeakerEncoder
    from townhall.media.opus import OpusPacketDecoder

    t = np.arange(48_000 * 3) / 48_000
    pcm = ((0.2 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 660 * t))
           * 32767).astype(np.int16)
    enc, dec, out = SpeakerEncoder(64_000), OpusPacketDecoder(), []
    for i in range(pcm.size // 960):
        if i and i % 24 == 0:  # 0.48 s: a whole number of 60 ms packets
            rate = low if (i // 24) % 2 else 64_000
            assert enc.between_packets
            if retune:
                enc.retune(rate)
            else:
                enc = SpeakerEncoder(rate)
        frame = av.AudioFrame.from_ndarray(pcm[i * 960:(i + 1) * 960].reshape(1, -1),
                                           format="s16", layout="mono")
        frame.sample_rate, frame.pts = 48_000, i * 960
        frame.time_base = fractions.Fraction(1, 48_000)
        out += [dec.decode(bytes(p)) for p in enc.encode(frame)]
    got = np.concatenate(out).astype(float)
    level = float(np.sqrt(np.mean(pcm.astype(float) ** 2)))
    rms = np.sqrt(np.convolve(got ** 2, np.ones(120) / 120, mode="valid"))[::120]
    # Switch k is at sample k * 24 * 960 (+ the decoder's delay): windows of 120 samples.
    quietest = [float(rms[k * 192 - 2:k * 192 + 12].min()) for k in range(1, 5)]
    return min(quietest) / level


def test_retuned_encoder_carries_on_without_a_gap() -> None:
    assert _quietest_at_switch(retune=True) > 0.5
    # A fresh encoder starts from silence: its lookahead's worth of audio goes missing.
    assert _quietest_at_switch(retune=False) < 0.3


def test_fec_is_held_at_the_lowest_level_at_the_lowest_rates() -> None:
    sizer = FecSizer(levels=STEPS4)
    sizer.report(0.25, 0.0)
    assert sizer.expected_loss(64_000) == sizer.expected_loss(24_000) == 30
    assert sizer.expected_loss(16_000) == sizer.expected_loss(8_000) == 5
    adapter = BitrateAdapter(max_bitrate=64_000)
    drive(adapter, bottleneck(24), 5)
    assert adapter.bitrate == 16_000 and adapter.fec.level == 10
    assert adapter.expected_loss == 5


def test_source_track_reopens_its_encoder_for_a_new_fec_size() -> None:
    import asyncio

    from townhall.cli.speak import SourceTrack, tone

    async def run() -> tuple[int, int]:
        track = SourceTrack(tone(440, 1.0), expected_loss=10)
        await track.recv()
        before = track._encoder.expected_loss
        track.retune(64_000, 20)  # same rate: the FEC size alone reopens it
        await track.recv()
        return before, track._encoder.expected_loss

    assert asyncio.run(run()) == (10, 20)
