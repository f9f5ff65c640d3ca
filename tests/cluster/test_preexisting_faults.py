"""The preexisting provider's faults and bad input, through the real OpenSSH server as in
test_preexisting.py (the remote fixture: tests/support/remote_host.py): start killed or
cut off midway is cleaned by stop; what cannot work is refused in one line, leaving
nothing behind."""

from __future__ import annotations

import json
import os
import pwd
import signal
import socket
import subprocess
import time

from tests.support.cli import CLI, assert_one_line_error
from tests.support.remote_host import Remote, assert_nothing_left, remote_processes


def _wait_for_step(cli: CLI, name: str, step: str, timeout: float = 300) -> dict:
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


# Faults ----------------------------------------------------------------------------


def test_start_killed_during_the_upload_is_cleaned_by_stop(remote):
    start = remote.popen("upkill", 1)
    _wait_for_step(remote.cli, "upkill", "stage")
    bin_dir = remote.cluster_root("upkill") / "bin"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(p.name.startswith("kube-master.kubemark-up") for p in
                                                  (bin_dir.iterdir() if bin_dir.exists() else [])):
        time.sleep(0.01)
    start.send_signal(signal.SIGKILL)
    start.wait(timeout=10)
    assert remote.cluster_root("upkill").exists()
    result = remote.cli.run("stop", "--name", "upkill")
    assert result.returncode == 0, result.stderr
    assert_nothing_left(remote, "upkill")


def test_start_killed_during_the_master_start_is_cleaned_by_stop(remote):
    start = remote.popen("mkill", 1)
    _wait_for_step(remote.cli, "mkill", "kube-apiserver")
    start.send_signal(signal.SIGKILL)
    start.wait(timeout=10)
    assert remote_processes(remote.sshd.user), "the master's processes outlive a SIGKILLed start"
    result = remote.cli.run("stop", "--name", "mkill")
    assert result.returncode == 0, result.stderr
    assert_nothing_left(remote, "mkill")


def test_ssh_dropped_in_the_middle_of_start(remote):
    start = remote.popen("dropped", 2)
    _wait_for_step(remote.cli, "dropped", "nodes")
    remote.sshd.stop()  # every sshd process: the connection is gone, and no new one comes
    try:
        _, stderr = start.communicate(timeout=300)
    finally:
        remote.sshd.start()
    assert start.returncode == 1, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "SSH" in errors[0], stderr
    # It could not undo what runs there: state is kept for a later stop.
    assert "run `kubemark-up stop --name dropped` once it can be reached" in stderr
    assert remote.state("dropped")["phase"] == "failed"
    result = remote.cli.run("stop", "--name", "dropped")
    assert result.returncode == 0, result.stderr
    assert_nothing_left(remote, "dropped")


def test_ssh_lost_during_the_upload_leaves_no_binary_under_its_name(remote):
    start = remote.popen("cutup", 1)
    _wait_for_step(remote.cli, "cutup", "stage")
    bin_dir = remote.cluster_root("cutup") / "bin"

    def partial() -> list:
        return [p for p in (bin_dir.iterdir() if bin_dir.exists() else []) if p.name.startswith("kube-master.kubemark-up.")]

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(p.stat().st_size > 1 << 20 for p in partial()):
        time.sleep(0.005)
    assert partial(), "the upload of kube-master never began"
    remote.sshd.stop()  # mid-transfer: `cat` on the host sees its input end, as at the end of the file
    try:
        _, stderr = start.communicate(timeout=300)
        assert not (bin_dir / "kube-master").exists()
    finally:
        remote.sshd.start()
    assert start.returncode == 1, stderr
    name = f"{remote.sshd.user}@127.0.0.1:{remote.sshd.port}"
    (error,) = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert error == (f"error: lost the SSH connection to {name} while uploading kube-master to {bin_dir}, "
                     "and opening it again failed: connection refused")
    assert "python3 -c" not in stderr and "import sys" not in stderr and "Traceback" not in stderr
    result = remote.cli.run("stop", "--name", "cutup")
    assert result.returncode == 0, result.stderr
    assert_nothing_left(remote, "cutup")


def test_a_run_rides_out_a_restarted_sshd(remote, tmp_path):
    result = remote.start("blip", 1)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "result"
    logins = remote.sshd.accepted()
    run = remote.cli.popen("run", "density", "--name", "blip", "--pods-per-node", "10", "--rate", "2",
                           "--interval", "2", "--out", str(out))
    try:
        # The run's connection: it reads the scheduler's /metrics first, then makes its pods.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and remote.sshd.accepted() == logins and run.poll() is None:
            time.sleep(0.02)
        assert remote.sshd.accepted() > logins, "the run never connected"
        remote.sshd.restart()  # every connection dropped; back on the same port with the same key
        assert run.poll() is None, "the run ended before the connection dropped"
        _, stderr = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, stderr
    assert remote.sshd.accepted() >= logins + 2  # the run opened its connection again
    # The scheduler's metrics, read over SSH before the drop and after it.
    scheduler = json.loads((out / "scheduler_latency.json").read_text())["result"]
    assert not scheduler["notes"], scheduler["notes"]
    assert scheduler["metrics"]["pods_scheduled"]["value"] >= 10 and scheduler["metrics"]["e2e_p99"]["value"] > 0
    resources = json.loads((out / "resources.json").read_text())["result"]
    assert not [note for note in resources["notes"] if "sampling" in note], resources["notes"]
    assert len(resources["data"]["samples"]) >= 2
    stop = remote.cli.run("stop", "--name", "blip")
    assert stop.returncode == 0, stop.stderr
    assert_nothing_left(remote, "blip")


# Bad input ------------------------------------------------------------------------


def _refused(remote: Remote, result: subprocess.CompletedProcess, *needles: str, code: int = 1) -> None:
    assert_one_line_error(result, code, *needles)
    assert not (remote.cli.home / "bad").exists()
    assert not remote.root.exists()


def test_refused_connection(remote):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens once it is closed
    _refused(remote, remote.start("bad", 1, port=port), f"127.0.0.1:{port}: connection refused")


def test_unreachable_host(remote):
    # A host that takes the connection and never answers, like one behind a silent firewall.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        result = remote.start("bad", 1, port=port, connect_timeout=1)
    _refused(remote, result, f"SSH to {remote.sshd.user}@127.0.0.1:{port}", "no SSH server answered within 1s")


def test_wrong_key(remote):
    _refused(remote, remote.start("bad", 1, identity_file=str(remote.sshd.wrong_key)),
             "authentication failed with the key", str(remote.sshd.wrong_key))


def test_unknown_host_key_without_the_trust_option(remote, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    _refused(remote, remote.start("bad", 1, known_hosts=str(empty)),
             "is not in", str(empty), "trust_unknown_host", remote.sshd.host_key_fingerprint)


def test_a_host_key_that_changed_is_refused(remote, tmp_path):
    other = tmp_path / "known_hosts"
    line = remote.sshd.known_hosts.read_text().split()
    impostor = remote.sshd.wrong_key.with_suffix(".pub").read_text().split()  # another ed25519 key
    other.write_text(f"{line[0]} {impostor[0]} {impostor[1]}\n")
    _refused(remote, remote.start("bad", 1, known_hosts=str(other)), "does not match", "intercepting")


def test_a_remote_root_that_cannot_be_written(remote, tmp_path):
    locked = tmp_path / "locked"  # the SSH user may not enter the test's tmp_path
    _refused(remote, remote.start("bad", 1, remote_root=str(locked / "srv")),
             f"{remote.sshd.user} cannot write {locked}/srv", "set preexisting.remote_root")


def test_a_cluster_folder_that_is_not_ours_is_left_alone(remote):
    theirs = remote.root / "bad"
    theirs.mkdir(parents=True)
    os.chown(remote.root, *_ids(remote.sshd.user))
    (theirs / "precious").write_text("keep me")
    try:
        result = remote.start("bad", 1)
        assert_one_line_error(result, 1, f"{theirs} already exists")
        assert (theirs / "precious").read_text() == "keep me"
        assert not (remote.cli.home / "bad").exists()
    finally:
        (theirs / "precious").unlink()
        theirs.rmdir()
        remote.root.rmdir()


def _ids(user: str) -> tuple[int, int]:
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid
