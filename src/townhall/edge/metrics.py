"""Prometheus metrics of the edge role."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

LISTENERS = Gauge("townhall_edge_listeners", "Listeners connected to this edge", ["kind"])
CHUNKS = Counter("townhall_edge_chunks_total", "Chunks received from the bus (all Spaces)")
SKIPS = Counter("townhall_edge_skips_total", "Times a slow listener skipped ahead to live")
SLOW_CLOSES = Counter("townhall_edge_slow_closes_total",
                      "Listeners closed for staying too slow (4408)")
REFUSALS = Counter("townhall_edge_refusals_total", "Joins refused", ["reason"])
FEEDS = Gauge("townhall_edge_spaces", "Spaces this edge is subscribed to")
INTERVAL = Gauge("townhall_edge_delivery_interval_seconds",
                 "How often chunks are handed to listeners (100 ms; coarser under load)")
LOOP_LAG = Gauge("townhall_edge_loop_lag_seconds", "Event-loop lag seen by the pacer")
BUSY = Gauge("townhall_edge_busy_ratio",
             "CPU seconds per second of this process, smoothed, as the pacer sees it")
DELIVERIES = Counter("townhall_edge_chunk_deliveries_total",
                     "Live chunks handed to listeners, by path: direct = the fast set's one "
                     "send of the shared bytes; queued = through the listener's backlog",
                     ["kind", "path"])
BEHIND = Gauge("townhall_edge_behind_ratio",
               "Share of listeners with chunks queued or a socket backing up (pacer input)")
TEXT_DELIVERIES = Counter("townhall_edge_text_deliveries_total",
                          "Shared state/levels text frames handed to listeners, by path",
                          ["path"])
REFILLED = Counter("townhall_edge_refilled_chunks_total",
                   "Chunks missed on the live subscription and refilled from JetStream")
REPLAYS = Counter("townhall_edge_replays_total",
                  "Joins that needed JetStream (older than the ring), by outcome: replayed "
                  "(a token of the edge's replay budget), shared (joined a replay in flight) "
                  "or refused (budget empty: started from what the edge holds)", ["outcome"])
PER_ADDRESS = Gauge("townhall_edge_listener_addresses",
                    "Client addresses holding at least one listener connection")
HTTP_CLOSES = Counter("townhall_http_guard_closes_total",
                      "HTTP connections closed by the front door's guards, by reason: "
                      "header-timeout (no complete request head in time) or over-cap "
                      "(503: the process has as many connections as it takes)", ["reason"])
