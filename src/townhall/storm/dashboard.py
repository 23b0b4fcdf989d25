"""The live dashboard: one rich table of the latest figures (renders without a terminal)."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def _ms(v: Any) -> str:
    return "—" if v is None else f"{v:.0f} ms"


def render(row: dict[str, Any], target: int) -> Table:
    """A table of one second's figures."""
    t = Table(title=f"townhall storm — t={row['t']:.0f} s", show_header=False)
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_row("connected / target", f"{row['live']} / {target}")
    t.add_row("admitted / refused / failed",
              f"{row['connected_total']} / {row['refused_total']} / {row['failed_total']}")
    t.add_row("left after listening / got in after a refusal",
              f"{row.get('left_total', 0)} / {row.get('admitted_after_refusal', 0)}")
    t.add_row("joins/s (refusals/s)", f"{row['joins']} ({row['refusals']})")
    t.add_row("time to first audio p50 / p99", f"{_ms(row['ttfa_p50'])} / {_ms(row['ttfa_p99'])}")
    t.add_row("delay behind live p50 / p99", f"{_ms(row['delay_p50'])} / {_ms(row['delay_p99'])}")
    t.add_row("gaps / skips / reconnects",
              f"{row['gaps_total']} / {row['skips_total']} / {row['restarts_total']}")
    if row.get("viewers") or row.get("api_requests"):
        t.add_row("pages open / api req/s (page, asset req/s)",
                  f"{row['viewers']} / {row['api_rps']} "
                  f"({row['req_page'] / row['dt']:.0f}, {row['req_asset'] / row['dt']:.0f})")
    cpu = row.get("server_cpu")
    mem = row.get("server_rss_mb")
    t.add_row("server CPU / memory",
              "not local" if cpu is None else f"{cpu:.0f} % / {mem:.0f} MB")
    t.add_row("storm CPU per listener", f"{row['storm_cpu_ms_per_listener_s']:.2f} ms/s")
    return t


def line(row: dict[str, Any], target: int) -> str:
    """The same figures as one plain log line, for runs without a terminal."""
    return (f"t={row['t']:.0f}s connected {row['live']}/{target} "
            f"admitted {row['connected_total']} refusals {row['refused_total']} "
            f"failed {row['failed_total']} left {row.get('left_total', 0)} "
            f"in-after-refusal {row.get('admitted_after_refusal', 0)} joins/s {row['joins']} "
            f"ttfa p99 {_ms(row['ttfa_p99'])} delay p99 {_ms(row['delay_p99'])} "
            f"gaps {row['gaps_total']} skips {row['skips_total']}"
            + (f" pages {row['viewers']} api req/s {row['api_rps']}" if row.get("viewers")
               else ""))
