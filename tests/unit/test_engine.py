"""start and stop driven through kubemark_up.cluster on the fakes of tests/support/fakes.py:
the step runner, the teardown, steps.insert and a node engine's failure, with no
Kubernetes binary and no process started."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from kubemark_up import cli, cluster
from kubemark_up.errors import KubemarkUpError
from kubemark_up.providers import registry
from kubemark_up.state import ClusterDir
from kubemark_up.steps import Step, insert
from kubemark_up.ui import UI
from tests.support.cli import assert_one_line_error


def settings(**flags):
    return registry.resolve_settings(flags={"provider": "fake", "name": "c1", "nodes": 0, **flags}, environ={})


def quiet() -> UI:
    return UI(Console(file=io.StringIO(), stderr=False, width=200))


def state(home: Path) -> dict:
    return json.loads((home / "c1" / "state.json").read_text())


def kubemark_up(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, home: Path,
                *args: str) -> subprocess.CompletedProcess:
    """The CLI run in this process (the fake provider's World lives here), as a user runs it."""
    for name in [n for n in os.environ if n.startswith("KUBEMARK_UP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("KUBEMARK_UP_HOME", str(home))
    monkeypatch.setattr(sys, "argv", ["kubemark-up", *args])
    handler = signal.getsignal(signal.SIGTERM)  # start takes SIGTERM as Ctrl-C; given back after
    try:
        with pytest.raises(SystemExit) as exited:
            cli.main()
    finally:
        signal.signal(signal.SIGTERM, handler)
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(sys.argv, exited.value.code, captured.out, captured.err)


def runs(world) -> list[str]:
    return [entry for entry in world.journal if entry.startswith("run ")]


def undos(world) -> list[str]:
    return [entry.removeprefix("undo ") for entry in world.journal if entry.startswith("undo ")]


def test_insert_puts_steps_before_or_after_a_key():
    steps = [Step(key, key, lambda ctx: None) for key in ("a", "b", "c")]
    new = [Step("x", "x", lambda ctx: None)]
    assert [s.key for s in insert(steps, before="b", new=new)] == ["a", "x", "b", "c"]
    assert [s.key for s in insert(steps, after="c", new=new)] == ["a", "b", "c", "x"]
    with pytest.raises(ValueError, match="no step 'z' among"):
        insert(steps, before="z", new=new)


def test_start_records_each_step_before_it_runs_and_stop_undoes_them_all_in_reverse(fake_world, tmp_path,
                                                                                     monkeypatch, capsys):
    home = tmp_path / "home"
    ctx = cluster.start(settings(nodes=2), home, quiet())
    # The fake provider's own step is where steps.insert put it, and each step found
    # itself recorded as started when it ran.
    assert runs(fake_world) == [f"run {key} (started)" for key in ["binaries", "ports", "fake-disk", "pki", "stage",
                                                                   "etcd", "kube-apiserver", "controllers", "nodes"]]
    recorded = state(home)
    assert list(recorded["steps"].items()) == [(key, "done") for key in
                                               ["binaries", "ports", "fake-disk", "pki", "stage", "etcd",
                                                "kube-apiserver", "controllers", "nodes"]]
    assert recorded["phase"] == "running" and ctx.state.nodes_ready == 2
    assert [(r["kind"], r["id"], r["status"]) for r in recorded["resources"]] == [("disk", "fake-disk-1", "created")]
    assert sorted(recorded["processes"]) == ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]
    assert len(fake_world.live()) == 4
    # The master's files went to the fake host through put, with their modes.
    assert fake_world.files["/srv/kubemark/pki/apiserver.key"][1] == 0o600
    assert fake_world.files["/srv/kubemark/data/start-master.sh"][1] == 0o700

    shown = kubemark_up(monkeypatch, capsys, home, "status", "--name", "c1", "--output", "json")
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["healthy"] is True and status["nodes"]["ready"] == 2
    assert [c["running"] for c in status["master"]["components"]] == [True] * 4

    assert cluster.stop("c1", home, quiet()) == ["stopped 4 process(es)"]
    assert undos(fake_world) == ["nodes", "controllers", "kube-apiserver", "etcd", "fake-disk"]
    assert fake_world.live() == [] and fake_world.ready_nodes == set()
    assert not (home / "c1" / "state.json").exists()

    journal = list(fake_world.journal)
    assert cluster.stop("c1", home, quiet()) == []  # a second stop has nothing to do
    assert fake_world.journal == journal


def test_a_failing_step_makes_start_undo_what_it_recorded_in_reverse(fake_world, tmp_path):
    home = tmp_path / "home"
    fake_world.fail_step = "kube-apiserver"
    with pytest.raises(KubemarkUpError, match="step kube-apiserver failed on purpose"):
        cluster.start(settings(nodes=2), home, quiet())
    # The failed step had been recorded as started, so its undo runs too; nothing after it ran.
    assert runs(fake_world)[-1] == "run kube-apiserver (started)"
    assert "nodes start" not in " ".join(fake_world.journal)
    assert undos(fake_world) == ["kube-apiserver", "etcd", "fake-disk"]
    assert fake_world.live() == []
    assert not (home / "c1" / "state.json").exists() and (home / "c1" / "logs").is_dir()
    assert cluster.stop("c1", home, quiet()) == []


def test_an_undo_that_fails_keeps_its_step_and_the_next_stop_retries_only_it(fake_world, tmp_path):
    home = tmp_path / "home"
    fake_world.only_own_steps = True
    cluster.start(settings(), home, quiet())
    assert list(state(home)["steps"]) == ["one", "fake-disk", "two", "three"]

    fake_world.fail_undo = {"two"}
    with pytest.raises(KubemarkUpError, match=r"stop left 1 problem\(s\); state kept") as failed:
        cluster.stop("c1", home, quiet())
    assert failed.value.detail == "could not undo two"
    # Every other undo still ran (problems are collected, not stopped at).
    assert undos(fake_world) == ["three", "two", "fake-disk", "one"]
    assert state(home)["steps"] == {"two": "done"} and state(home)["resources"] == []

    fake_world.fail_undo = set()
    fake_world.journal.clear()
    assert cluster.stop("c1", home, quiet()) == ["stopped 0 process(es)"]
    assert undos(fake_world) == ["two"]
    assert not (home / "c1" / "state.json").exists()


def test_a_second_start_over_a_running_cluster_is_refused_and_changes_nothing(fake_world, tmp_path):
    home = tmp_path / "home"
    fake_world.only_own_steps = True
    cluster.start(settings(), home, quiet())
    before = state(home)
    with pytest.raises(KubemarkUpError, match="a cluster named 'c1' already exists \\(phase: running\\)"):
        cluster.start(settings(), home, quiet())
    assert state(home) == before


def test_a_failed_hollow_node_is_one_line_from_the_cli_and_start_undoes_everything(fake_world, tmp_path,
                                                                                  monkeypatch, capsys):
    fake_world.failed_nodes = {"hollow-node-1"}
    result = kubemark_up(monkeypatch, capsys, tmp_path / "home", "start", "--provider", "fake", "--name", "c1",
                         "--nodes", "3")
    assert_one_line_error(
        result, 1, "1 hollow node(s) failed; hollow-node-1: its kubelet exited with code 2 "
        "(log: /srv/kubemark/logs/hollow-node-1.log)", "F1207 fake kubelet: no such flag --bogus")
    assert undos(fake_world) == ["nodes", "controllers", "kube-apiserver", "etcd", "fake-disk"]
    assert fake_world.live() == []


def test_stop_without_a_readable_state_stops_what_carries_the_marker(fake_world, tmp_path):
    home = tmp_path / "home"
    cluster.start(settings(nodes=1), home, quiet())
    assert len(fake_world.live()) == 4
    (home / "c1" / "state.json").write_text("{")  # damaged: the steps and PIDs are lost
    fake_world.journal.clear()
    assert cluster.stop("c1", home, quiet(), purge=True) == ["stopped the processes found by their marker",
                                                             "removed its files and logs"]
    # No step's undo could run; the provider's sweep found every master process by its marker.
    assert undos(fake_world) == [] and "nodes stop" in fake_world.journal
    assert fake_world.live() == []
    assert not (home / "c1").exists()


def test_stop_without_state_frees_the_name_and_keeps_the_logs(fake_world, tmp_path):
    home = tmp_path / "home"
    cluster.start(settings(nodes=1), home, quiet())
    (home / "c1" / "logs" / "earlier.log").write_text("kept\n")
    (home / "c1" / "state.json").unlink()  # lost: the steps and PIDs with it
    done = cluster.stop("c1", home, quiet())
    assert done == ["stopped the processes found by their marker", "removed its runtime files (logs kept)"]
    assert fake_world.live() == []
    # The name is free: nothing of the cluster but its logs is left (a second start of
    # the name after such a stop: tests/cluster/test_gce_faults.py).
    assert sorted(p.name for p in (home / "c1").iterdir()) == ["logs"]
    assert (home / "c1" / "logs" / "earlier.log").read_text() == "kept\n"
    assert not ClusterDir(home, "c1").exists()
    assert cluster.stop("c1", home, quiet()) == []


def test_an_unreadable_state_is_kept_beside_the_logs_when_stop_frees_the_name(fake_world, tmp_path):
    home = tmp_path / "home"
    cluster.start(settings(nodes=1), home, quiet())
    (home / "c1" / "state.json").write_text("{")
    done = cluster.stop("c1", home, quiet())
    kept = home / "c1" / "logs" / "state.json.unreadable"
    assert done[-1] == f"removed its runtime files (logs kept, the unreadable state in {kept})"
    assert kept.read_text() == "{" and not (home / "c1" / "state.json").exists()
    assert cluster.stop("c1", home, quiet()) == []  # nothing left to stop: the name is free


def test_the_ready_bar_shows_no_rate():
    out = io.StringIO()
    ui = UI(Console(file=out, width=120, force_terminal=False))
    with ui.counter("hollow nodes Ready", total=3) as update:
        update(1)
        update(3)
        update(2, title="pods Running")
    text = out.getvalue()
    assert "3/3" in text and "2/3" in text
    assert "/s" not in text and "nodes/s" not in text
