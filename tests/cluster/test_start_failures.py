"""start that fails, is interrupted or is killed: one clear line, a non-zero exit,
nothing left running, and stop cleans whatever a SIGKILL left behind."""

from __future__ import annotations

import json
import re
import signal
import socket
import time
from pathlib import Path

from tests.support.cli import assert_one_line_error, kubemark_tmp_files, listening, marked_processes


def _wait_for_step(cli, name: str, step: str, timeout: float = 120) -> dict:
    """Wait until start has recorded `step` in state.json; return that state."""
    path = cli.home / name / "state.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            state = {}
        if step in state.get("steps", {}):
            return state
        time.sleep(0.05)
    raise AssertionError(f"start never reached step {step}")


def test_sigkilled_start_is_cleaned_by_stop(cli):
    tmp_before = kubemark_tmp_files()
    start = cli.popen("start", "--name", "killed", "--nodes", "2")
    _wait_for_step(cli, "killed", "nodes")
    time.sleep(0.5)  # some hollow-node processes are starting or started
    start.send_signal(signal.SIGKILL)
    start.wait(timeout=10)
    cluster_dir = cli.home / "killed"
    left = marked_processes(cluster_dir)
    assert left, "a SIGKILLed start leaves its detached components running"
    state = json.loads((cluster_dir / "state.json").read_text())
    ports = [port for name, port in state["ports"].items() if not name.endswith(".kubelet")]
    assert state["phase"] == "starting"

    result = cli.run("stop", "--name", "killed")
    assert result.returncode == 0, result.stderr
    assert marked_processes(cluster_dir) == []
    assert listening(ports) == []
    assert not (cluster_dir / "state.json").exists()
    assert kubemark_tmp_files() - tmp_before == set()
    # And a new start of the same name works afterwards.
    again = cli.run("start", "--name", "killed", "--nodes", "1")
    assert again.returncode == 0, again.stderr
    assert "logs of the previous run moved to" in again.stderr
    assert cli.run("stop", "--name", "killed", "--purge").returncode == 0
    assert marked_processes(cluster_dir) == []
    assert kubemark_tmp_files() - tmp_before == set()


def test_sigterm_during_start_stops_everything_it_started(cli):
    start = cli.popen("start", "--name", "termed", "--nodes", "2")
    _wait_for_step(cli, "termed", "controllers")
    start.send_signal(signal.SIGTERM)
    _, stderr = start.communicate(timeout=120)
    assert start.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "error: interrupted" in stderr
    cluster_dir = cli.home / "termed"
    assert marked_processes(cluster_dir) == []
    assert not (cluster_dir / "state.json").exists()
    assert (cluster_dir / "logs" / "etcd.log").exists()


def test_master_that_exits_shows_its_log_and_leaves_nothing(cli):
    result = cli.run(
        "start", "--name", "badflag", "--nodes", "1",
        KUBEMARK_UP_APISERVER_EXTRA_ARGS="--no-such-apiserver-flag=1",
    )
    assert_one_line_error(result, 1, "kube-apiserver exited with code 1 during start-up", "no-such-apiserver-flag")
    assert marked_processes(cli.home / "badflag") == []
    assert not (cli.home / "badflag" / "state.json").exists()


def test_master_that_never_becomes_ready_times_out_with_its_log(cli):
    result = cli.run("start", "--name", "slow", "--nodes", "1", KUBEMARK_UP_MASTER_READY_TIMEOUT="0.3")
    assert_one_line_error(result, 1, "was not ready at", "after 0s")
    # The last lines of the component's log follow the one-line message.
    error, *after = result.stderr.split("error: ", 1)[1].splitlines()
    log = Path(re.search(r"\(log: (\S+) on localhost\)", error)[1]).read_text()
    assert [line for line in after if line] and all(line in log for line in after), after
    assert marked_processes(cli.home / "slow") == []


def test_apiserver_port_in_use_is_refused_before_anything_starts(cli):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = cli.run("start", "--name", "busy", "--apiserver-port", str(port))
    assert_one_line_error(result, 2, f"apiserver_port {port} is already in use")
    assert not (cli.home / "busy").exists()


def test_missing_binaries_say_how_to_get_them(cli, tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    result = cli.run("start", "--name", "nobin", "--bin-dir", str(empty))
    assert_one_line_error(result, 1, "lacks etcd, kube-apiserver", "kubemark-up binaries --source build")
    assert marked_processes(cli.home / "nobin") == []

    # No --bin-dir, an empty cache, and no way to get them (and nothing fetched from afar).
    bare = type(cli)(home=tmp_path / "bare-home", bin_dir=None)
    no_sources = tmp_path / "no-sources.yaml"
    no_sources.write_text("binary_sources: []\n")
    result = bare.run("start", "--name", "nobin", "--config", str(no_sources), KUBEMARK_UP_BINARY_SOURCES="")
    assert_one_line_error(result, 1, "missing etcd", "kubemark-up binaries --source build")


def test_one_command_at_a_time_per_cluster(cli):
    tmp_before = kubemark_tmp_files()
    start = cli.popen("start", "--name", "busy", "--nodes", "1")
    _wait_for_step(cli, "busy", "ports")
    result = cli.run("stop", "--name", "busy")
    assert_one_line_error(result, 1, "another kubemark-up command is working on cluster 'busy'")
    assert start.wait(timeout=120) == 0
    assert cli.run("stop", "--name", "busy", "--purge").returncode == 0
    assert marked_processes(cli.home / "busy") == []
    assert kubemark_tmp_files() - tmp_before == set()


def test_stop_with_a_damaged_state_file_still_stops_everything(cli):
    cli.engine = "kubemark"  # counts stock processes: 4 master components, their supervisors, 2 per node
    tmp_before = kubemark_tmp_files()
    assert cli.run("start", "--name", "damaged", "--nodes", "1").returncode == 0
    cluster_dir = cli.home / "damaged"
    assert len(marked_processes(cluster_dir)) == 10
    (cluster_dir / "state.json").write_text('{"schema_version": 99}')
    result = cli.run("stop", "--name", "damaged")
    assert result.returncode == 0, result.stderr
    assert "stopping its processes by their marker with provider local" in result.stderr
    assert marked_processes(cluster_dir) == []
    assert kubemark_tmp_files() - tmp_before == set()
    # The name is free; the unreadable state kept for a look, beside the logs.
    assert not (cluster_dir / "state.json").exists() and not (cluster_dir / "cluster.json").exists()
    assert (cluster_dir / "logs" / "state.json.unreadable").read_text() == '{"schema_version": 99}'
    assert cli.run("stop", "--name", "damaged", "--purge").returncode == 0
    assert not cluster_dir.exists()


def test_stop_with_both_files_lost_sweeps_this_machine(cli):
    tmp_before = kubemark_tmp_files()
    assert cli.run("start", "--name", "lost", "--nodes", "1").returncode == 0
    cluster_dir = cli.home / "lost"
    (cluster_dir / "state.json").unlink()
    (cluster_dir / "cluster.json").write_text("{broken")
    result = cli.run("stop", "--name", "lost", "--purge")
    assert result.returncode == 0, result.stderr
    assert "on this machine (cluster.json is lost too)" in result.stderr
    assert marked_processes(cluster_dir) == []
    assert kubemark_tmp_files() - tmp_before == set()
    assert not cluster_dir.exists()


def test_start_tells_the_true_count_when_nodes_may_fail(cli):
    # Every stock hollow kubelet exits at once on a flag it does not know; two may fail.
    # (Stock kubemark's flag: the fleet takes none, so its nodes would come up.)
    result = cli.run("start", "--name", "lenient", "--nodes", "2", HOLLOW_KUBELET_TEST_ARGS="--no-such-kubelet-flag=1",
                     ALLOWED_NOTREADY_NODES="2", KUBEMARK_UP_NODE_ENGINE="kubemark")
    try:
        assert result.returncode == 0, result.stderr
        assert "is up: 0 of 2 hollow nodes Ready (allowed_not_ready 2)" in result.stdout
        status = cli.run("status", "--name", "lenient")
        assert status.returncode == 3 and "hollow nodes: 0/2 Ready" in status.stdout
    finally:
        assert cli.run("stop", "--name", "lenient", "--purge").returncode == 0


def test_start_fails_when_the_fleet_dropped_kubelet_events(cli):
    # No room for an Event waiting to be sent: of the five a kubelet records as it
    # starts, those its queue's sender is not already waiting for are dropped. A fleet
    # that lost Events is not a faithful node, so start fails with the count and the log.
    result = cli.run("start", "--name", "dropped", "--nodes", "2", KUBEMARK_UP_FLEET_EVENT_QUEUE_PER_NODE="0")
    try:
        assert_one_line_error(result, 1, "the hollow nodes are Ready but fleet process", "kubelet Events")
        dropped = re.search(r"dropped (\d+) of (\d+) kubelet Events \(its log: (\S+)\)", result.stderr)
        assert dropped and 0 < int(dropped[1]) <= int(dropped[2]), result.stderr
        assert "Unable to record event: too many queued events, dropped event" in Path(dropped[3]).read_text()
        assert marked_processes(cli.home / "dropped") == []
    finally:
        assert cli.run("stop", "--name", "dropped", "--purge").returncode == 0
