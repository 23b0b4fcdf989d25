"""Failover across hosts: how long listeners hear silence when the owning stage's host is
cut off, and when the next owner's host is lost outright.

``python -m bench failover -- --runs N`` (as root: it builds network namespaces). Each run
is the scenario of tests/netns/test_hosts.py, from tests/hostlab.py, on a fresh lab: four
namespace hosts, NATS R3 on h1-h3 (the raft leaders a takeover needs kept on nats-h1, the
one node whose host runs no stage), api+edge on h1, a stage on h2, api+stage on h3, an
edge on h4; a 440 Hz ``townhall speak`` on h1, listeners on h1 and h4. Then (1) the owning
stage's host is cut off (nft drop) for 20 s and healed, (2) every process of the owner's
host is killed. Per event, from the cut or the kill: the old lease's lapse (its last
renewal + TTL, as h1's watch saw it), the new owner's clock ("stage owns space" in its
log), the first chunk on the bus after the silence (h1's NATS node), each listener's first
chunk and tone back (the first of three toned chunks in a row), the speaker live again.
Also: chunk numbers a listener heard twice (must be 0) and takeovers between the heal and
the kill (needless: the new owner should keep the Space). Target: tone back within 5 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from tests import hostlab
from tests.netlab import why_unavailable

TARGET_S = 5.0
PARTITION_S = 20.0
EVENTS = ("partition", "host loss")
LISTENERS = ("h1", "h4")
# (label in the table, key in hostlab.timeline's answer or "tone back on <host>")
STEPS = [("lease lapse (last renewal + TTL)", "old lease expires"),
         ("lease seen taken by h1's watch", "lease seen taken"),
         ("new owner's clock starts", "new owner's clock starts"),
         ("first chunk on the bus", "first chunk on the bus"),
         *[(f"first chunk at the listener on {at}", f"first chunk on {at}") for at in LISTENERS],
         *[(f"tone back at the listener on {at}", f"tone back on {at}") for at in LISTENERS],
         ("speaker noticed (reconnecting)", "speaker noticed"),
         ("speaker live again", "speaker live again")]
TONE_KEYS = [f"tone back on {at}" for at in LISTENERS]


@dataclass
class Run:
    """One run's figures: per event, seconds after the cut or the kill, by step."""
    number: int
    load: float
    load_after: float = float("nan")
    events: dict[str, dict[str, float]] = field(default_factory=dict)
    repeats: int | None = None
    needless: int | None = None
    pause: float | None = None  # the longest a listener heard nothing, heal to kill
    error: str = ""


def one_run(run: Run, tmp: Path, show: Any) -> None:
    """The scenario once, on a fresh lab under ``tmp``; fills ``run`` as it goes."""
    with hostlab.cluster(tmp, show_logs=False) as c:
        scenario = hostlab.Scenario.start(c)
        hostlab.leaders_placed(c)  # as the test: measure with the leaders where the api puts
        show()                     # them, not while it is still moving them
        part, healed = scenario.partition(seconds=PARTITION_S)
        run.events["partition"] = {f"tone back on {k}": v for k, v in part.tone_back.items()}
        show()
        hostlab.leaders_placed(c)  # elections on the heal may have moved one: put back
        loss = scenario.host_loss()
        run.events["host loss"] = {f"tone back on {k}": v for k, v in loss.tone_back.items()}
        for name, event in (("partition", part), ("host loss", loss)):
            run.events[name].update(hostlab.timeline(c, event.since, event.old, scenario.logs))
        run.repeats = sum(sum(hostlab.repeats(path)) for path in scenario.logs.values())
        run.needless = hostlab.takeovers(c, healed, loss.since)
        run.pause = max(hostlab.longest_pause(path, healed, loss.since)
                        for path in scenario.logs.values())
        show()


def table(runs: list[Run]) -> Table:
    """The live view: one line per run and event."""
    t = Table(title=f"failover across hosts (target: tone back within {TARGET_S:g} s)")
    for col in ("run", "load", "event", "lapse", "clock", "bus", "tone h1", "tone h4",
                "speaker live", "repeats", "needless", "status"):
        t.add_column(col)
    keys = ("old lease expires", "new owner's clock starts", "first chunk on the bus",
            *TONE_KEYS, "speaker live again")
    for run in runs:
        for event in EVENTS:
            got = run.events.get(event, {})
            t.add_row(str(run.number), f"{run.load:.1f}", event,
                      *[f"{got[k]:.2f}" if k in got else "…" for k in keys],
                      "" if run.repeats is None else str(run.repeats),
                      "" if run.needless is None else str(run.needless),
                      run.error[:40] or ("done" if run.repeats is not None else "running"))
    return t


def main(argv: list[str]) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m bench failover")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--plot", default="bench/failover/failover.png")
    p.add_argument("--keep", default="", help="keep each run's logs under this directory")
    p.add_argument("--note", default="", help="a sentence for the notes, e.g. what else ran")
    args = p.parse_args(argv)
    why = why_unavailable()
    if why:
        sys.exit(f"bench failover: {why}")
    console = Console(stderr=True)
    runs: list[Run] = []
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="th-failover-"))
    with Live(table(runs), console=console, refresh_per_second=2) as live:
        def show() -> None:
            live.update(table(runs))

        for k in range(1, args.runs + 1):
            run = Run(k, os.getloadavg()[0])
            runs.append(run)
            show()
            tmp = base / f"run{k}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            try:
                one_run(run, tmp, show)
            except Exception as exc:  # a failed run is a figure too: say why, go on
                run.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
                console.log(traceback.format_exc())
            run.load_after = os.getloadavg()[0]
            show()
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    _plot(runs, Path(args.plot))
    return result(runs, args)


def _median_max(values: list[float]) -> tuple[str, str]:
    if not values:
        return "—", "—"
    return f"{statistics.median(values):.2f}", f"{max(values):.2f}"


def result(runs: list[Run], args: argparse.Namespace) -> dict[str, Any]:
    """The README block: per step, median and max over the runs that reached it."""
    rows: list[list[Any]] = []
    for label, key in STEPS:
        row: list[Any] = [label]
        target = []
        for event in EVENTS:
            values = [r.events[event][key] for r in runs if key in r.events.get(event, {})]
            row += _median_max(values)
            if key in TONE_KEYS:
                target.append(f"{event}: {sum(v < TARGET_S for v in values)}/{len(runs)}")
        row.append(", ".join(target) if target else "—")
        rows.append(row)
    done = [r for r in runs if r.repeats is not None]
    rows.append(["chunk numbers heard twice or backwards (must be 0)",
                 str(sum(r.repeats or 0 for r in done)), "—", "—", "—",
                 f"{len(done)}/{len(runs)} runs completed"])
    rows.append(["longest pause a listener heard between the heal and the kill",
                 *_median_max([r.pause for r in done if r.pause is not None]), "—", "—",
                 f"per run: {', '.join(f'{r.pause:.2f}' for r in done if r.pause is not None)}"])
    rows.append(["needless takeovers after the heal (runs with one)",
                 f"{sum(1 for r in done if r.needless)}", "—", "—", "—",
                 "per run: " + ", ".join(str(r.needless) for r in done) if done else "—"])
    failed = [f"run {r.number}: {r.error}" for r in runs if r.error]
    loads = ", ".join(f"{r.load:.1f}-{r.load_after:.1f}" for r in runs)
    return {
        "title": "Failover across hosts: partition and host loss",
        "command": f"python -m bench failover -- --runs {args.runs}",
        "columns": ["step (seconds after the cut or the kill)", "partition median",
                    "partition max", "host loss median", "host loss max",
                    f"tone back within {TARGET_S:g} s"],
        "rows": rows,
        "notes": (f"{len(runs)} runs of the scenario of tests/netns/test_hosts.py (shared "
                  "code: tests/hostlab.py), each on a fresh lab of four namespace hosts: the "
                  f"owning stage's host cut off (nft drop) for {PARTITION_S:g} s and healed, "
                  "then every process of the then owner's host killed. Load average at each "
                  f"run's start and end: {loads}; every process of the four hosts runs on this "
                  "one machine." + (f" {args.note}" if args.note else "")
                  + " Lapse: the old owner's last stored renewal + the lease TTL (can be "
                  "before the cut: a renewal missed while "
                  "the heal's elections ran); clock: the new owner's \"stage owns space\" "
                  "log line; bus: the first chunk after the silence on h1's NATS node; tone "
                  "back: the first of three toned chunks in a row a listener hears; "
                  "longest pause: chunks every 0.1 s, so a pause above that is silence a "
                  "listener heard while the Space had an owner (the heal's elections, the "
                  "api moving a leader back); needless takeovers: the lease changing hands "
                  "between the heal and the kill. h1's watch of the leases bucket can see "
                  "a takeover seconds after the new owner's log says it took the lease (the "
                  "watch stalled): the clock row "
                  "is the owner's own. Median and max over the runs that reached the step."
                  + (f" Failed: {'; '.join(failed)}." if failed else "")
                  + f" Plot: {args.plot}."),
    }


def _plot(runs: list[Run], path: Path) -> None:
    """One bar per run and event: the silence until the last listener's tone, the steps
    marked on it, the 5 s target as a line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    marks = [("old lease expires", "lease lapse", "|", "black"),
             ("new owner's clock starts", "new owner's clock", "o", "tab:blue"),
             ("first chunk on the bus", "first chunk on the bus", "s", "tab:orange"),
             ("speaker live again", "speaker live again", "^", "tab:green")]
    bars = [(f"run {r.number} {event}", r.events.get(event, {})) for r in runs
            for event in EVENTS]
    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.45 * max(1, len(bars))))
    for y, (_, got) in enumerate(bars):
        tones = [got[k] for k in TONE_KEYS if k in got]
        if tones:
            ax.barh(y, max(tones), color="#c9d6ea", height=0.6,
                    label="silence (to tone back)" if y == 0 else None)
        for key, label, marker, color in marks:
            if key in got:
                ax.plot(got[key], y, marker, color=color, markersize=9,
                        label=label if y == 0 else None, linestyle="none")
    ax.axvline(TARGET_S, color="red", linestyle="--", label=f"{TARGET_S:g} s target")
    ax.set_yticks(range(len(bars)), [b[0] for b in bars], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds after the cut or the kill")
    drawn = [got[k] for _, got in bars for k in [*TONE_KEYS, *(m[0] for m in marks)]
             if k in got]
    ax.set_xlim(0, max([TARGET_S + 1, *drawn]) + 0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside, never on a bar
    ax.set_title("townhall: failover across hosts, per run")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    print(main(sys.argv[1:]))
