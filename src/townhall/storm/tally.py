"""Folds worker reports into the ledger and one row of figures per second (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from townhall.storm.accounting import Ledger
from townhall.storm.percentiles import percentile
from townhall.storm.requestkinds import API_KINDS, KINDS, per_viewer


@dataclass
class StormTally:
    """Running totals of a storm; feed it worker reports, take a row each second."""

    target: int
    ledger: Ledger = field(init=False)
    live: dict[int, int] = field(default_factory=dict)
    cpu: dict[int, float] = field(default_factory=dict)
    ttfa_all: list[float] = field(default_factory=list)
    delay_all: list[float] = field(default_factory=list)
    waited_all: list[float] = field(default_factory=list)  # refused -> admitted, ms
    totals: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("gaps", "skips", "restarts", "chunks", "bytes"), 0))
    _joins: int = 0
    _refusals: int = 0
    _ttfa: list[float] = field(default_factory=list)
    _delay: list[float] = field(default_factory=list)
    _cpu_prev: float = 0.0
    viewers: dict[int, int] = field(default_factory=dict)  # browser pages open, per worker
    loading: dict[int, int] = field(default_factory=dict)  # of which still loading
    requests: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    viewer_requests: list[dict[str, int]] = field(default_factory=list)
    socket_reactions: int = 0
    _requests: dict[str, int] = field(default_factory=dict)  # this interval's, by kind

    def __post_init__(self) -> None:
        self.ledger = Ledger(self.target)

    def feed(self, worker: int, cpu_s: float, ev: dict[str, Any]) -> None:
        """One worker's drained events."""
        self.cpu[worker] = cpu_s
        for i in ev["connected"]:
            self.ledger.connected(i)
        for i, reason in ev["refused"]:
            self.ledger.refused(i, reason)
        for i in ev.get("left", ()):
            self.ledger.left(i)
        self.waited_all += ev.get("waited_ms", [])
        for i, reason in ev["failed"]:
            if i >= 0:
                self.ledger.failed(i, reason)
        self._joins += len(ev["connected"])
        self._refusals += len(ev["refused"])
        self.totals["restarts"] += len(ev["restarted"])
        for k in ("gaps", "skips", "chunks", "bytes"):
            self.totals[k] += int(ev[k])
        self._ttfa += ev["ttfa_ms"]
        self._delay += ev["delays_ms"]
        self.live[worker] = int(ev["live"])
        self.viewers[worker] = int(ev.get("viewers", 0))
        self.loading[worker] = int(ev.get("loading", 0))
        for k, n in ev.get("requests", {}).items():
            self.requests[k] = self.requests.get(k, 0) + n
            self._requests[k] = self._requests.get(k, 0) + n
        self.viewer_requests += ev.get("viewer_requests", [])
        self.socket_reactions += int(ev.get("socket_reactions", 0))

    def row(self, dt: float) -> dict[str, Any]:
        """The figures of the last interval of dt seconds, then start a new interval."""
        cpu = sum(self.cpu.values())
        live = sum(self.live.values())
        counts = self.ledger.counts()
        row = {
            "live": live, "joins": round(self._joins / dt, 1),
            "refusals": round(self._refusals / dt, 1),
            "connected_total": self.ledger.admitted, "refused_total": self.ledger.refusals,
            "failed_total": counts["failed"], "left_total": counts["left"],
            "admitted_after_refusal": self.ledger.admitted_after_refusal,
            "ttfa_p50": percentile(self._ttfa, 50), "ttfa_p99": percentile(self._ttfa, 99),
            "delay_p50": percentile(self._delay, 50), "delay_p99": percentile(self._delay, 99),
            **{f"{k}_total": v for k, v in self.totals.items()},
            "storm_cpu_ms_per_listener_s": (cpu - self._cpu_prev) * 1000 / dt / max(1, live),
            "dt": round(dt, 3), "viewers": sum(self.viewers.values()),
            "loading": sum(self.loading.values()),
            **{f"req_{k}": self._requests.get(k, 0) for k in KINDS},
            "api_requests": sum(self._requests.get(k, 0) for k in API_KINDS),
            "api_rps": round(sum(self._requests.get(k, 0) for k in API_KINDS) / dt, 1),
        }
        self._requests = {}
        self.ttfa_all += self._ttfa
        self.delay_all += self._delay
        self._joins = self._refusals = 0
        self._ttfa, self._delay = [], []
        self._cpu_prev = cpu
        return row

    def summary(self) -> dict[str, Any]:
        """Final figures; closes the ledger (pending listeners count as failed)."""
        self.ledger.close()
        return {
            "target": self.target, **self.ledger.counts(),
            "accounting_balanced": self.ledger.balanced(),
            "reasons": self.ledger.reasons(), "admitted_joins": self.ledger.admitted,
            "refusals": self.ledger.refusals,
            "admitted_after_refusal": self.ledger.admitted_after_refusal,
            "wait_after_refusal_p50_ms": percentile(self.waited_all, 50),
            "wait_after_refusal_p99_ms": percentile(self.waited_all, 99),
            "ttfa_p50_ms": percentile(self.ttfa_all, 50),
            "ttfa_p99_ms": percentile(self.ttfa_all, 99),
            "delay_p50_ms": percentile(self.delay_all, 50),
            "delay_p99_ms": percentile(self.delay_all, 99),
            **self.totals, "storm_cpu_s": round(sum(self.cpu.values()), 2),
            "requests": dict(self.requests),
            "requests_per_viewer": per_viewer(self.viewer_requests),
            "viewers_counted": len(self.viewer_requests),
            "socket_reactions": self.socket_reactions,
        }
