"""Listening quality on bad networks: PESQ-WB and STOI per network condition.

``python -m bench quality`` (as root: it builds network namespaces). For each condition a
fresh lab (tests/quality.py): ``townhall speak --file`` of espeak-ng speech in one
namespace, the stage reachable for media only through the impairment relay
(tests/impair.py) in another, ``townhall listen --out`` next to the stage; 8 s windows of
the recording aligned to the speech by cross-correlation and scored. Beside each row: the
stage's own counters (/metrics) and, computed in the same run, the same speech through
Opus alone (the speaker's encoder, the relay's loss process with the same seed, libopus
FEC/PLC) and through Opus twice (that, then the program's encoder: the tandem every
listener hears). With ``--before-src DIR`` every condition also runs townhall from another
source tree (``git archive <commit> src | tar -x -C DIR``): before/after in one run.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from tests import quality
from tests.netlab import why_unavailable
from townhall.cli.speak import SPEAKER_BITRATE

CONDITIONS = {
    "clean": quality.condition("clean"),
    "5% random": quality.condition("5% random", loss=5),
    "15% random": quality.condition("15% random", loss=15),
    # Gilbert-Elliott: bursts of 4 packets on average (r = 0.25), 5 % lost overall.
    "5% bursty": quality.condition("5% bursty", ge_p=0.0132, ge_r=0.25),
    "jitter 40±20 ms": quality.condition("jitter 40±20 ms", delay=40, jitter=20),
    "300 ms spikes": quality.condition("300 ms spikes", delay=20, spike_every=5, spike=300),
    "24 kbit/s cap": quality.condition("24 kbit/s cap", rate=24),
    # Not in the default set: random loss with a round trip (the rows above have ~0 ms
    # uplink delay, where resends on NACK always arrive in time).
    "5% random + 60 ms": quality.condition("5% random + 60 ms", loss=5, delay=60),
    "15% random + 60 ms": quality.condition("15% random + 60 ms", loss=15, delay=60),
}
DEFAULT = ("clean", "5% random", "15% random", "5% bursty", "jitter 40±20 ms",
           "300 ms spikes", "24 kbit/s cap")
TARGETS = {"clean": 3.5, "5% random": 3.3, "15% random": 2.8, "jitter 40±20 ms": 3.3}
SEED = 7


def _median(values: list[float]) -> float:
    values = [v for v in values if v == v]  # NaN: a window pesq could not score
    return statistics.median(values) if values else float("nan")


def _speaker_kbps(log: str, start: int) -> tuple[int, int]:
    """The rate ``townhall speak`` ended at and how many times it changed (its log)."""
    rates = [int(m) for m in re.findall(r"speak: bitrate (\d+) kbit/s", log)]
    return (rates[-1] if rates else start), len(rates)


def _speaker_fec(log: str, start: int = 10) -> str:
    """The FEC size (% loss) ``townhall speak`` ended at and how many times it changed."""
    sizes = [int(m) for m in re.findall(r"speak: FEC for (\d+) % loss", log)]
    return f"{sizes[-1] if sizes else start} ({len(sizes)})"


def main(argv: list[str]) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m bench quality")
    p.add_argument("--runs", type=int, default=1, help="runs per condition")
    p.add_argument("--windows", type=int, default=3, help="8 s windows scored per run")
    p.add_argument("--conditions", default=",".join(DEFAULT),
                   help="comma-separated: " + ", ".join(CONDITIONS))
    p.add_argument("--before-src", default="", help="a source tree to compare against")
    p.add_argument("--plot", default="bench/quality/quality.png")
    args = p.parse_args(argv)
    console = Console(stderr=True)
    why = why_unavailable() or quality.why_no_speech()
    if why:
        sys.exit(f"bench quality: {why}")
    names = [n.strip() for n in args.conditions.split(",") if n.strip()]
    versions: list[tuple[str, Path | None]] = [("this", None)]
    if args.before_src:
        versions.insert(0, ("before", Path(args.before_src) / "src"))
    seconds = 4 + 8 * args.windows + 2
    rows: list[list[Any]] = []
    plot: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="th-quality-") as tmp_dir, Progress(
            console=console) as progress:
        tmp = Path(tmp_dir)
        speech = tmp / "speech.wav"
        ref = quality.make_speech(speech, seconds=8.0)
        task = progress.add_task("conditions", total=len(names) * len(versions) * args.runs)
        for name in names:
            cond = CONDITIONS[name]
            lost = quality.loss_mask(cond.impairment, SEED, ref.size // 960 + 3, size=100)
            alone = quality.score_pair(ref, quality.opus_alone(ref, lost))
            tandem = quality.score_pair(ref, quality.opus_alone(ref, lost, tandem=True))
            for version, src in versions:
                scores: list[quality.Score] = []
                counters: list[dict[str, float]] = []
                relay_loss: list[float] = []
                rates: list[str] = []
                fecs: list[str] = []
                for k in range(args.runs):
                    progress.update(task, description=f"{name} ({version}, run {k + 1})")
                    run = quality.run_condition(cond, speech, seconds,
                                                tmp / f"{name}-{version}-{k}".replace(" ", "_"),
                                                seed=SEED + k, src=src)
                    console.log("\n".join(line for line in run.speak_log.splitlines()
                                           if "bitrate" in line or "link" in line or "FEC" in line))
                    got = quality.score_recording(ref, run.recording, 4.0, args.windows)
                    scores += got
                    counters.append(run.stage)
                    up = run.relay.get("up", {})
                    offered = max(1, up.get("offered", 0))
                    relay_loss.append(100 * (offered - up.get("delivered", 0)) / offered)
                    end, changes = _speaker_kbps(run.speak_log, SPEAKER_BITRATE // 1000)
                    rates.append(f"{end} ({changes})")
                    fecs.append(_speaker_fec(run.speak_log))
                    progress.advance(task)
                    console.log(f"{name} {version}: " + ", ".join(
                        f"{s.pesq:.2f}/{s.stoi:.3f}" for s in got) + f" {run.stage}")

                def c(key: str, counters: list[dict[str, float]] = counters) -> str:
                    value = _median([x.get(key, float("nan")) for x in counters])
                    return "—" if value != value else f"{value:.0f}"  # NaN: not counted

                pesq = _median([s.pesq for s in scores])
                target = TARGETS.get(name)
                rows.append([name if version == "this" else f"{name} ({version})",
                             f"{pesq:.2f}", f"{_median([s.stoi for s in scores]):.3f}",
                             f"{alone.pesq:.2f} / {alone.stoi:.3f}",
                             f"{tandem.pesq:.2f} / {tandem.stoi:.3f}",
                             ", ".join(rates) if version == "this" else "—",
                             ", ".join(fecs) if version == "this" else "—",
                             f"{_median(relay_loss):.1f} %", c("lost"), c("resent"), c("fec"),
                             c("concealed"), c("target_ms"), c("late"),
                             "—" if target is None else
                             f"{target} {'met' if pesq >= target else 'not met'}"])
                plot.setdefault(name, {})[version] = pesq
            plot[name]["Opus alone"] = alone.pesq
            plot[name]["Opus ×2"] = tandem.pesq
    _plot(plot, Path(args.plot))
    return {
        "title": "Quality: what a listener hears from a speaker on a bad network",
        "command": f"python -m bench quality --runs {args.runs} --windows {args.windows}"
                   + (" --before-src DIR" if args.before_src else ""),
        "columns": ["speaker's uplink", "PESQ-WB", "STOI", "Opus alone (PESQ / STOI)",
                    "Opus ×2 tandem", "speaker kbit/s at end (changes)",
                    "speaker FEC % at end (changes)", "relay lost",
                    "stage lost", "resent (NACK)", "FEC-recovered", "concealed",
                    "jitter target ms", "late ticks", "target"],
        "rows": rows,
        "notes": (f"Median over runs × {args.windows} windows of 8 s (espeak-ng speech, 4 "
                  "voices/rates, looped by `townhall speak --file` with FEC sized for 10 % "
                  "loss at the start, then from the stage's reports (speaker FEC: the size "
                  "it ended at and how many times it changed, per run), "
                  f"starting at {SPEAKER_BITRATE // 1000} kbit/s and adapting (speaker kbit/s: "
                  "the rate it ended at and how many times it changed, per run); a "
                  "\"before\" tree's speaker at its own default), after 4 s of warm-up, "
                  "aligned by cross-correlation; "
                  "PESQ-WB and STOI at 16 kHz. Relay conditions are uplink only (speaker → "
                  f"stage), seeded ({SEED}); the random-loss rows have no added delay, so "
                  "resends on NACK come back within a frame. Opus alone / ×2: the same "
                  "speech through this tree's speaker encoder, the same loss process and "
                  "seed, no network, decoded with libopus FEC/PLC (×2: then through the "
                  "program's 32 kbit/s encoder as well), same run. Stage counters: totals "
                  f"over the run from /metrics. Plot: {args.plot}."),
    }


def _plot(data: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(data)
    series = sorted({k for v in data.values() for k in v},
                    key=lambda s: ["before", "this", "Opus alone", "Opus ×2"].index(s))
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / max(1, len(series))
    for i, s in enumerate(series):
        ax.bar([j + i * width for j in range(len(names))],
               [data[n].get(s, float("nan")) for n in names], width, label=s)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))], names, fontsize=8)
    ax.set_ylabel("PESQ-WB (median)")
    ax.set_ylim(1, 4.6)
    ax.legend(fontsize=8)
    ax.set_title("townhall: listener quality per speaker uplink condition")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main(sys.argv[1:])
