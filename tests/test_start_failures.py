"""start that fails, is interrupted or is killed: one clear line, a non-zero exit,
nothing left running, and stop cleans whatever a SIGKILL left behind."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.conftest import assert_one_line_error, kubemark_tmp_files, listening, marked_processes

pytestmark = pytest.mark.cluster


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
    log = Path(re.search(r"\(log: (\S+)\)", error)[1]).read_text()
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


@pytest.mark.parametrize(
    ("args", "env", "code", "needle"),
    [
        (["start", "--nodes", "-1"], {}, 2, "nodes: Input should be greater than or equal to 0"),
        (["start", "--nodes", "many"], {}, 2, "Invalid value for '--nodes'"),
        (["start", "--name", "Not_A_Name"], {}, 2, "name: must be 1-40 lower-case"),
        (["start"], {"NUM_NODES": "lots"}, 2, "(from environment variable NUM_NODES)"),
        (["start", "--provider", "nowhere"], {}, 2, "unknown provider 'nowhere' (known: local"),
        (["start", "--config", "/no/such/file.yaml"], {}, 2, "config file /no/such/file.yaml does not exist"),
        (["start"], {"KUBEMARK_UP_APISERVER_EXTRA_ARGS": "not-a-flag"}, 2, "'not-a-flag' is not a --flag"),
        (["status", "--name", "ghost"], {}, 1, "no cluster named 'ghost'"),
        (["pod-for-node", "hollow-node-0", "--name", "ghost"], {}, 1, "no cluster named 'ghost'"),
        (["status", "--output", "yaml"], {}, 2, "--output must be text or json"),
        (["start", "--no-such-option"], {}, 2, "No such option: --no-such-option"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(cli, args, env, code, needle):
    result = cli.run(*args, **env)
    assert_one_line_error(result, code, needle)
    created = sorted(p.name for p in cli.home.glob("*")) if cli.home.exists() else []
    assert created == []


def test_unknown_setting_in_config_file(cli, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("nodes: 2\nnode_count: 3\n")
    result = cli.run("start", "--config", str(config))
    assert_one_line_error(result, 2, "unknown setting 'node_count'", str(config))


def test_stop_of_a_cluster_that_never_existed_is_fine(cli):
    result = cli.run("stop", "--name", "never")
    assert result.returncode == 0 and "nothing to stop" in result.stdout


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
    tmp_before = kubemark_tmp_files()
    assert cli.run("start", "--name", "damaged", "--nodes", "1").returncode == 0
    cluster_dir = cli.home / "damaged"
    assert len(marked_processes(cluster_dir)) == 10
    (cluster_dir / "state.json").write_text('{"schema_version": 99}')
    result = cli.run("stop", "--name", "damaged")
    assert result.returncode == 0, result.stderr
    assert "stopping the cluster's processes by their marker" in result.stderr
    assert marked_processes(cluster_dir) == []
    assert kubemark_tmp_files() - tmp_before == set()
    assert (cluster_dir / "state.json").exists()  # kept for a look
    assert cli.run("stop", "--name", "damaged", "--purge").returncode == 0
    assert not cluster_dir.exists()


def test_damaged_state_file_is_one_line(cli):
    folder = cli.home / "corrupt"
    folder.mkdir(parents=True)
    (folder / "state.json").write_text("{not json")
    result = cli.run("status", "--name", "corrupt")
    assert_one_line_error(result, 1, "state.json is not valid JSON")
    assert os.path.exists(folder / "state.json")
