"""Issue 4, point 2 across processes: a listener leaves one edge and resumes on another.

Real processes: the session's nats-server, one `townhall serve --roles api,stage` (the
stage keeps publishing chunks, silence included, while the Space is live) and two
`townhall serve --roles edge`. Edge B has never seen the Space when the listener comes
back, so everything it missed comes from JetStream, then live chunks from edge B's own
subscription: each sequence number must arrive exactly once, in order, with no jump.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import Served, spawn_townhall, start_townhall
from tests.edges import Listener, contiguous, live_space, ws_base

pytestmark = pytest.mark.timeout(180)

HEARD_ON_A = 20      # chunks the listener hears on edge A before it leaves
MISSED = 20          # chunks published while it is away (it must get them from JetStream)
LIVE_ON_B = 30       # chunks past what edge B had seen at the join, heard live


@pytest.fixture(scope="module")
def two_edges(tmp_path_factory: pytest.TempPathFactory,
              nats_url: str) -> Iterator[tuple[Served, Served, Served]]:
    """(api + stage, edge A, edge B) on one NATS, sharing one data dir (one token secret)."""
    data = tmp_path_factory.mktemp("two-edges")
    with contextlib.ExitStack() as running:
        # The api first (it makes the token secret the edges read), then both edges at once.
        api = start_townhall(data, "--nats", nats_url, "--roles", "api,stage")
        running.callback(api.stop)
        edges = [spawn_townhall(data, "--nats", nats_url, "--roles", "edge") for _ in range(2)]
        for edge in edges:
            running.callback(edge.stop)
        for edge in edges:
            edge.wait_healthy()
        yield api, edges[0], edges[1]


async def test_a_listener_resumes_on_another_edge_with_every_chunk_once_in_order(
        two_edges: tuple[Served, Served, Served]) -> None:
    api, edge_a, edge_b = two_edges
    space, _ = live_space(api, "resume across edges")

    on_a = await Listener.open(f"{ws_base(edge_a)}/ws/{space}")
    watch = await Listener.open(f"{ws_base(edge_a)}/ws/{space}")  # stays: counts the chunks
    await on_a.until(0)  # the first chunk, whatever its sequence
    await on_a.until(on_a.seqs[0] + HEARD_ON_A - 1)
    await on_a.ws.close()
    assert contiguous(on_a.seqs)
    last = on_a.seqs[-1]

    await watch.until(last + MISSED)  # the stage keeps publishing meanwhile
    await watch.ws.close()

    on_b = await Listener.open(f"{ws_base(edge_b)}/ws/{space}?from={last + 1}")
    assert on_b.hello["resumed"] is True, on_b.hello
    assert on_b.hello["from"] == last + 1
    # Well past the catch-up: the newest chunk edge B had at the join, or the last one
    # published while the listener was away (whichever is later), then some live ones.
    seen_at_join = on_b.hello["live_seq"] if on_b.hello["live_seq"] is not None else last
    await on_b.until(max(seen_at_join, last + MISSED) + LIVE_ON_B)
    await on_b.ws.close()
    assert on_b.seqs[0] == last + 1, on_b.seqs[:5]
    assert contiguous(on_b.seqs), "a gap, a repeat or a reorder across the two edges"
    assert not [t for t in on_b.texts if t.get("type") == "jump"], on_b.texts
    assert on_b.texts and on_b.texts[0]["type"] == "state"


async def test_an_absurd_from_on_the_other_edge_jumps_to_live(
        two_edges: tuple[Served, Served, Served]) -> None:
    api, edge_a, edge_b = two_edges
    space, _ = live_space(api, "absurd from")
    on_a = await Listener.open(f"{ws_base(edge_a)}/ws/{space}")
    await on_a.until(0)
    await on_a.ws.close()

    ahead = 10**15  # no edge and no stream holds it: told to jump, then live chunks
    on_b = await Listener.open(f"{ws_base(edge_b)}/ws/{space}?from={ahead}")
    assert on_b.hello["resumed"] is False, on_b.hello
    await on_b.until(0)
    await on_b.until(on_b.seqs[0] + 10)
    await on_b.ws.close()
    jumps = [t for t in on_b.texts if t.get("type") == "jump"]
    assert len(jumps) == 1 and jumps[0]["from"] == ahead, on_b.texts
    assert on_b.seqs[0] < ahead and contiguous(on_b.seqs)


async def test_a_malformed_from_on_an_edge_only_process_is_400(
        two_edges: tuple[Served, Served, Served]) -> None:
    api, _, edge_b = two_edges
    space, _ = live_space(api, "malformed from")
    for bad in ("abc", "-1", "1e9"):
        with pytest.raises(InvalidStatus) as info:
            await connect(f"{ws_base(edge_b)}/ws/{space}?from={bad}", open_timeout=30)
        assert info.value.response.status_code == 400, bad
