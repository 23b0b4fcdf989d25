"""`townhall serve --stages N`: how many stage processes, their flags and names, and the
supervision that starts a dead one again (a real child process, no townhall)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.waiting import until
from townhall.cli.main import build_parser, serve_settings
from townhall.cluster.plan import make_plan
from townhall.procs import Backoff, Supervisor
from townhall.serve import _child_argv, default_stages
from townhall.settings import STAGE_MAX_SPACES, Settings


def settings_of(*argv: str) -> Settings:
    return serve_settings(build_parser().parse_args(["serve", *argv]))


def test_by_default_every_core_but_one_mixes() -> None:
    assert default_stages(32, with_http=True) == 31
    assert default_stages(2, with_http=True) == 1
    assert default_stages(1, with_http=True) == 1
    assert default_stages(32, with_http=False) == 1  # `--roles stage`: itself


def test_stage_flags_and_their_environment_twins(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings_of("--stages", "4", "--stage-max-spaces", "250")
    assert (s.stages, s.stage_max_spaces) == (4, 250)
    default = settings_of()
    assert (default.stages, default.stage_max_spaces) == (None, STAGE_MAX_SPACES)
    assert settings_of("--stage-max-spaces", "0").stage_max_spaces == 0  # no limit
    monkeypatch.setenv("TOWNHALL_STAGES", "3")
    monkeypatch.setenv("TOWNHALL_STAGE_MAX_SPACES", "40")
    s = settings_of()
    assert (s.stages, s.stage_max_spaces) == (3, 40)


@pytest.mark.parametrize("argv", [("--stages", "0"), ("--stages", "many"),
                                  ("--stage-max-spaces", "-1"),
                                  ("--stage-max-spaces", "1.5")])
def test_malformed_stage_flags_are_refused(argv: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        settings_of(*argv)


def test_each_stage_child_has_its_own_name_one_stage_and_the_budget(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TOWNHALL_STAGES", "8")  # inherited by children: not obeyed there
    parent = Settings(data_dir=tmp_path, nats_urls=["nats://127.0.0.1:4222"], node_id="h1",
                      stage_max_spaces=250)
    names = set()
    for i in (1, 2):
        argv = _child_argv(parent, ["stage"], f"h1-stage-{i}")
        child = serve_settings(build_parser().parse_args(argv[argv.index("serve"):]))
        assert child.roles == ("stage",) and child.stages == 1
        assert child.stage_max_spaces == 250
        names.add(child.node_id)
    assert names == {"h1-stage-1", "h1-stage-2"}


def test_cluster_stages_are_one_process_each_with_the_budget_given() -> None:
    ports = iter(range(30000, 30100))
    plan = make_plan(Path("/tmp/c"), nats_nodes=1, apis=1, edges=1, stages=3,
                     port_for=lambda: next(ports), stage_max_spaces=20)
    stages = [p for p in plan.procs if p.roles == "stage"]
    assert [p.name for p in stages] == ["stage-1", "stage-2", "stage-3"]
    for proc in stages:
        argv = proc.argv("python", "/d", ["nats://n:1"], 1)
        s = serve_settings(build_parser().parse_args(argv[argv.index("serve"):]))
        assert (s.stages, s.stage_max_spaces, s.node_id) == (1, 20, proc.name)
    api = next(p for p in plan.procs if p.roles == "api")
    assert "--stage-max-spaces" not in api.argv("python", "/d", ["nats://n:1"], 1)


def test_backoff_doubles_while_a_child_keeps_dying_and_resets_once_it_ran() -> None:
    b = Backoff(first_s=0.5, max_s=4.0, healthy_s=30.0)
    assert [b.died(1.0) for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert b.died(31.0) == 0.5


SLEEPER = "import time\nprint('up', flush=True)\ntime.sleep(60)\n"


def test_the_supervisor_starts_a_killed_child_again_and_stops_it_for_good(
        tmp_path: Path) -> None:
    out = tmp_path / "up.log"
    sup = Supervisor(poll_s=0.05)
    first = sup.keep("sleeper", [sys.executable, "-c", SLEEPER], stdout=out.open("ab"),
                     stdin=subprocess.DEVNULL)
    until(lambda: out.read_bytes().count(b"up") == 1, 30, "the child to start")
    os.kill(first.pid, signal.SIGKILL)
    until(lambda: out.read_bytes().count(b"up") == 2, 30, "the child to be started again")
    assert sup.restarts("sleeper") == 1
    second = sup.procs[0]
    assert second.pid != first.pid and second.poll() is None
    assert sup.stop(grace_s=5) == [-signal.SIGTERM]
    assert sup.restarts("sleeper") == 1  # stopped for good, not restarted
