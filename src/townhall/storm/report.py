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


def write(out: Path, summary: dict[str, Any], rows: list[dict[str, Any]]) -> list[Path]:
    """Write report.json, the plots and index.html under out; returns the files."""
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "report.json"]
    files[0].write_text(json.dumps({"summary": summary, "series": rows}, indent=1,
                                   ensure_ascii=False))
    ts = [r["t"] for r in rows]
    for name, (title, cols) in PLOTS.items():
        fig, ax = plt.subplots(figsize=(7, 3.2))
        for key, label in cols:
            ys = [r.get(key) for r in rows]
            ax.plot(ts, [float("nan") if y is None else y for y in ys], label=label)
        ax.set_title(title)
        ax.set_xlabel("seconds")
        ax.legend(loc="upper left")
        fig.tight_layout()
        fig.savefig(out / name)
        plt.close(fig)
        files.append(out / name)
    cells = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in summary.items())
    imgs = "".join(f'<img src="{n}" alt="{t}">' for n, (t, _) in PLOTS.items())
    html = (f"<!doctype html><meta charset=utf-8><title>townhall storm report</title>"
            f"<h1>townhall storm</h1><table>{cells}</table>{imgs}")
    (out / "index.html").write_text(html)
    files.append(out / "index.html")
    return files
