"""The storm report: JSON with every figure over time, PNG plots and an index.html."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

PLOTS = {
    "listeners.png": ("Listeners", [("live", "connected"), ("target_started", "started"),
                                    ("left_total", "left (total)"),
                                    ("admitted_after_refusal", "in after a refusal (total)")]),
    "joins.png": ("Joins and refusals per second", [("joins", "joins/s"),
                                                    ("refusals", "refusals/s")]),
    "delay.png": ("Delay behind live (ms)", [("delay_p50", "p50"), ("delay_p99", "p99")]),
    "server.png": ("Server CPU (%) and memory (MB)", [("server_cpu", "CPU %"),
                                                      ("server_rss_mb", "RSS MB")]),
}
# --protocol browser only: what the viewers asked of the server, per second.
BROWSER_PLOTS = {
    "api.png": ("API requests per second", [("api_rps", "api req/s"),
                                            ("viewers", "pages open")]),
}


def _plot(path: Path, title: str, series: dict[str, tuple[list[float], list[Any]]]) -> None:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for label, (ts, ys) in series.items():
        ax.plot(ts, [float("nan") if y is None else y for y in ys], label=label)
    ax.set_title(title)
    ax.set_xlabel("seconds")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def compare_api_rate(path: Path, runs: dict[str, list[dict[str, Any]]]) -> Path:
    """One plot of api requests per second over time for several runs (e.g. page vs poll)."""
    _plot(path, "API requests per second",
          {label: ([r["t"] for r in rows], [r.get("api_rps") for r in rows])
           for label, rows in runs.items()})
    return path


def write(out: Path, summary: dict[str, Any], rows: list[dict[str, Any]]) -> list[Path]:
    """Write report.json, the plots and index.html under out; returns the files."""
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "report.json"]
    files[0].write_text(json.dumps({"summary": summary, "series": rows}, indent=1,
                                   ensure_ascii=False))
    ts = [r["t"] for r in rows]
    plots = {**PLOTS, **(BROWSER_PLOTS if summary.get("protocol") == "browser" else {})}
    for name, (title, cols) in plots.items():
        _plot(out / name, title, {label: (ts, [r.get(key) for r in rows])
                                  for key, label in cols})
        files.append(out / name)
    cells = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in summary.items())
    imgs = "".join(f'<img src="{n}" alt="{t}">' for n, (t, _) in plots.items())
    html = (f"<!doctype html><meta charset=utf-8><title>townhall storm report</title>"
            f"<h1>townhall storm</h1><table>{cells}</table>{imgs}")
    (out / "index.html").write_text(html)
    files.append(out / "index.html")
    return files
