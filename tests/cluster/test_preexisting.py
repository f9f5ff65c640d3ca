"""The preexisting provider through a real OpenSSH server: the master and the hollow
nodes on "another" host, which is this machine seen through an unprivileged sshd on
a loopback port (tests/support/sshd.py), so each test can check from outside what landed
there: files, modes, processes, ports.

Here the full cycle and what it puts on the host; faults and bad input are in
test_preexisting_faults.py (the remote fixture: tests/support/remote_host.py)."""

from __future__ import annotations

import json
import os
import pwd
import signal
import stat
import subprocess
import time

import psutil

from tests.support.cli import assert_one_line_error, listening, marked_processes
from tests.support.remote_host import assert_nothing_left, remote_processes

# The full cycle ---------------------------------------------------------------------


def test_the_full_cycle_through_ssh(remote, tmp_path):
    # An unknown host key, taken on trust as asked, said so, and pinned in state.
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    result = remote.start("remote", 2, known_hosts=str(empty), trust_unknown_host=True)
    assert result.returncode == 0, result.stderr
    # Not a terminal: a long step says when it begins, not only when it ends.
    assert "… put the master's binaries in" in result.stderr
    assert f"trusting the unknown host key of {remote.sshd.user}@127.0.0.1:{remote.sshd.port}" in result.stderr
    assert remote.sshd.host_key_fingerprint in result.stderr
    state = remote.state("remote")
    pinned = state["host_keys"][f"{remote.sshd.user}@127.0.0.1:{remote.sshd.port}"]
    assert pinned.split()[1] == remote.sshd.host_key.with_suffix(".pub").read_text().split()[1]
    kubeconfig = remote.cli.home / "remote" / "kubeconfig.kubemark"

    def kubectl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True,
                              timeout=60)

    # The master runs on the host as the SSH user, supervised, from the uploaded files.
    owner = pwd.getpwnam(remote.sshd.user).pw_uid
    root = remote.cluster_root("remote")
    for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        record = state["processes"][name]
        supervisor = psutil.Process(record["pid"])
        assert supervisor.uids().real == owner
        assert record["log"] == f"{root}/logs/{name}.log"
        (component,) = supervisor.children()
        assert component.exe() == str(root / "bin" / "kube-master")
    nodes = json.loads(kubectl("get", "nodes", "-o", "json").stdout)["items"]
    assert sorted(n["metadata"]["name"] for n in nodes) == ["hollow-node-0", "hollow-node-1"]
    assert all(any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"]) for n in nodes)

    # A Deployment's pods run on the hollow nodes.
    assert kubectl("create", "deployment", "pause", "--image=registry.k8s.io/pause:3.10", "--replicas=3").returncode == 0
    deadline, pods = time.monotonic() + 120, []
    while time.monotonic() < deadline:
        pods = json.loads(kubectl("get", "pods", "-l", "app=pause", "-o", "json").stdout)["items"]
        if len(pods) == 3 and all(p["status"].get("phase") == "Running" for p in pods):
            break
        time.sleep(1)
    assert len(pods) == 3 and all(p["status"].get("phase") == "Running" for p in pods), pods
    assert {p["spec"]["nodeName"] for p in pods} <= {"hollow-node-0", "hollow-node-1"}

    status = remote.cli.run("status", "--name", "remote", "-o", "json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["healthy"] and report["provider"] == "preexisting"
    assert report["master_host"] == f"{remote.sshd.user}@127.0.0.1:{remote.sshd.port}"
    assert report["nodes"]["ready"] == 2

    where = json.loads(remote.cli.run("pod-for-node", "hollow-node-1", "--name", "remote", "-o", "json").stdout)
    # The default engine: one fleet process carries both nodes, run as the SSH user.
    assert where["where"] == f"fleet process fleet-0 on {remote.sshd.user}@127.0.0.1:{remote.sshd.port}"
    for entry in where["processes"]:
        process = psutil.Process(entry["pid"])
        assert "kubemark-fleet" in process.cmdline()[0] and process.uids().real == owner
        assert entry["log"].startswith(f"{root}/logs/")

    out = tmp_path / "logs"
    logs = remote.cli.run("logs", "--name", "remote", "--out", str(out))
    assert logs.returncode == 0, logs.stderr
    names = {p.name for p in out.iterdir()}
    assert {"etcd.log", "kube-apiserver.log", "kube-scheduler.supervise.json", "fleet-0.log"} <= names
    assert "Serving securely" in (out / "kube-apiserver.log").read_text()

    ports = list(state["ports"].values())
    stop = remote.cli.run("stop", "--name", "remote")
    assert stop.returncode == 0, stop.stderr
    assert_nothing_left(remote, "remote")
    assert listening(ports) == []
    # The logs came home before the host's copy went.
    assert (remote.cli.home / "remote" / "logs" / "kube-apiserver.log").stat().st_size > 0
    assert (remote.cli.home / "remote" / "logs" / "fleet-0.log").exists()


def test_keys_on_the_host_are_private_and_never_on_a_command_line(remote):
    result = remote.start("secret", 1)
    assert result.returncode == 0, result.stderr
    root = remote.cluster_root("secret")
    for folder in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    keys = list((root / "pki").rglob("*.key"))
    assert len(keys) > 10
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    for kubeconfig in (root / "pki" / "kubeconfigs").rglob("*.kubeconfig"):
        assert stat.S_IMODE(kubeconfig.stat().st_mode) == 0o600, kubeconfig
    secrets = [line for key in keys for line in key.read_text().splitlines()[1:-1]]
    for process in remote_processes(remote.sshd.user) + marked_processes(remote.cli.home / "secret"):
        cmdline = " ".join(process.cmdline())
        assert "PRIVATE KEY" not in cmdline and not any(line in cmdline for line in secrets)
    for log in (root / "logs").iterdir():
        text = log.read_text(errors="replace")
        assert "PRIVATE KEY" not in text and not any(line in text for line in secrets), log
    assert remote.cli.run("stop", "--name", "secret").returncode == 0
    assert_nothing_left(remote, "secret")


def test_a_master_component_that_crashes_on_the_host_is_restarted(remote):
    result = remote.start("crash", 0)  # a master-only cluster
    assert result.returncode == 0, result.stderr
    assert "master-only" in result.stdout

    def report() -> tuple[int, dict]:
        answer = remote.cli.run("status", "--name", "crash", "-o", "json")
        return answer.returncode, json.loads(answer.stdout)

    _, before = report()
    apiserver = next(c for c in before["master"]["components"] if c["name"] == "kube-apiserver")
    os.kill(apiserver["pid"], signal.SIGKILL)
    code, down = report()
    assert code == 3 and not down["master"]["healthy"]
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        code, after = report()
        if code == 0:
            break
        time.sleep(1)
    assert code == 0, after
    again = next(c for c in after["master"]["components"] if c["name"] == "kube-apiserver")
    assert again["restarts"] == 1 and again["pid"] != apiserver["pid"]
    log = (remote.cluster_root("crash") / "logs" / "kube-apiserver.log").read_text()
    assert "kube-apiserver exited with code 137; restart 1 in 10s" in log
    # Told not to, stop leaves the host's logs behind with everything else it removes.
    assert remote.cli.run("stop", "--name", "crash", "--no-fetch-logs").returncode == 0
    assert_nothing_left(remote, "crash")
    assert not (remote.cli.home / "crash" / "logs" / "kube-apiserver.log").exists()


def test_binaries_already_on_the_host_are_checked_not_uploaded(remote, bin_dir):
    """remote_bin_dir: the user's folder of the same build, checked by SHA-256 and
    never written; another build there is refused before the master starts."""
    theirs = remote.sshd.home / f"bins-{os.getpid()}"
    theirs.mkdir()
    try:
        for name in ("kube-master", "kubemark"):
            (theirs / name).write_bytes((bin_dir / name).read_bytes())
            (theirs / name).chmod(0o755)
        for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
            (theirs / name).symlink_to("kube-master")
        subprocess.run(["chown", "-R", remote.sshd.user, str(theirs)], check=True)
        before = {p.name: p.stat().st_mtime_ns for p in theirs.iterdir()}
        result = remote.start("shared-bins", 1, "--node-engine", "kubemark", remote_bin_dir=str(theirs))
        assert result.returncode == 0, result.stderr
        assert f"check the master's binaries in {theirs}" in result.stderr
        assert not (remote.cluster_root("shared-bins") / "bin" / "kube-master").exists()
        record = remote.state("shared-bins")["processes"]["hollow-node-0.kubelet"]
        assert record["argv"][0] == f"{theirs}/kubemark"
        assert remote.cli.run("stop", "--name", "shared-bins").returncode == 0
        assert_nothing_left(remote, "shared-bins")
        assert {p.name: p.stat().st_mtime_ns for p in theirs.iterdir()} == before  # untouched, and kept
        (theirs / "kube-master").write_bytes(b"#!/bin/sh\nexit 0\n")  # another build
        result = remote.start("other-bins", 1, "--node-engine", "kubemark", remote_bin_dir=str(theirs))
        assert_one_line_error(result, 1, f"{theirs}/kube-master on {remote.sshd.user}@127.0.0.1", "is another build")
        assert_nothing_left(remote, "other-bins")
    finally:
        subprocess.run(["rm", "-rf", str(theirs)], check=True)


def test_logs_after_a_failed_start(remote, tmp_path):
    result = remote.cli.run("start", "--name", "failed", "--nodes", "1", "--config", str(remote.config()),
                            KUBEMARK_UP_APISERVER_EXTRA_ARGS="--no-such-apiserver-flag=1", timeout=600)
    assert_one_line_error(result, 1, "kube-apiserver exited with code 1 during start-up")
    assert_nothing_left(remote, "failed")
    out = tmp_path / "logs"
    logs = remote.cli.run("logs", "--name", "failed", "--out", str(out))
    assert logs.returncode == 0, logs.stderr
    assert "no-such-apiserver-flag" in (out / "kube-apiserver.log").read_text()
    assert (out / "etcd.log").stat().st_size > 0



def test_a_run_samples_the_master_over_ssh(remote, tmp_path):
    result = remote.start("measured", 1)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "result"
    run = remote.cli.run("run", "density", "--name", "measured", "--pods-per-node", "2", "--interval", "2",
                         "--out", str(out), timeout=300)
    assert run.returncode == 0, run.stderr
    resources = json.loads((out / "resources.json").read_text())["result"]
    assert resources["data"]["where"] == f"{remote.sshd.user}@127.0.0.1:{remote.sshd.port}"
    assert set(resources["data"]["cpu_seconds"]) == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}
    assert len(resources["data"]["samples"]) >= 2
    # What /proc said over SSH is what this machine sees of the very process.
    apiserver = psutil.Process(remote.state("measured")["processes"]["kube-apiserver"]["pid"]).children()[0]
    assert apiserver.uids().real == pwd.getpwnam(remote.sshd.user).pw_uid
    rss = apiserver.memory_info().rss / 2**20
    assert 0.5 * rss < resources["metrics"]["kube-apiserver_rss_max"]["value"] < 2 * rss
    startup = json.loads((out / "pod_startup.json").read_text())
    assert startup["cluster"]["provider"] == "preexisting" and startup["result"]["metrics"]["pods_running"]["value"] == 2
    # The scheduler's metrics, read on the host over SSH.
    scheduler = json.loads((out / "scheduler_latency.json").read_text())["result"]
    assert not scheduler["notes"] and scheduler["metrics"]["pods_scheduled"]["value"] >= 2
    assert scheduler["metrics"]["e2e_p99"]["value"] > 0

    # What clusterloader2's SchedulingMetrics and EtcdMetrics do, with what `env` exports:
    # SSH to MASTER_IP as KUBE_SSH_USER with KUBE_SSH_KEY_PATH, then curl the fixed ports.
    state = remote.state("measured")
    assert {k: state["ports"][k] for k in ("controller_manager", "scheduler", "etcd_metrics")} == {
        "controller_manager": 10257, "scheduler": 10259, "etcd_metrics": 2382}
    env = remote.cli.run("env", "--name", "measured", "-o", "json")
    assert env.returncode == 0, env.stderr
    values = json.loads(env.stdout)
    assert values["KUBE_SSH_USER"] == remote.sshd.user and values["KUBE_SSH_PORT"] == str(remote.sshd.port)
    assert values["KUBE_SSH_KEY_PATH"] == str(remote.sshd.client_key) and values["ETCD_INSECURE_PORT"] == "2382"
    # The tests' sshd cannot have port 22, and env says what that costs clusterloader2.
    assert "port 22 only" in env.stderr
    for command, needle in (
        ("curl -sf -X GET -k https://localhost:10259/metrics", "scheduler_pod_scheduling_sli_duration_seconds_bucket"),
        ("curl -sf -k https://localhost:10257/metrics", "workqueue_adds_total"),
        ("curl -sf http://localhost:2382/metrics", "etcd_mvcc_db_total_size_in_bytes"),
    ):
        ssh = subprocess.run(
            ["ssh", "-p", values["KUBE_SSH_PORT"], "-i", values["KUBE_SSH_KEY_PATH"], "-o", "BatchMode=yes",
             "-o", f"UserKnownHostsFile={remote.sshd.known_hosts}", f"{values['KUBE_SSH_USER']}@{values['MASTER_IP']}",
             command], capture_output=True, text=True, timeout=60)
        assert ssh.returncode == 0 and needle in ssh.stdout, (command, ssh.returncode, ssh.stderr[-500:])
    stop = remote.cli.run("stop", "--name", "measured")
    assert stop.returncode == 0, stop.stderr
    assert_nothing_left(remote, "measured")


def test_a_standard_metrics_port_in_use_on_the_host_is_one_line(remote):
    import socket

    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 10259))
        taken.listen()
        result = remote.start("busy", 0)
    assert_one_line_error(result, 2, "10259 (scheduler) already in use", "standard_metrics_ports: false")
    stop = remote.cli.run("stop", "--name", "busy")
    assert stop.returncode == 0, stop.stderr
    assert_nothing_left(remote, "busy")


def test_a_fleet_on_the_host(remote):
    """The fleet engine on the master's host over SSH: its binary and the nodes' keys
    put there (0600), the fleet process run as the SSH user, nodes Ready, pod-for-node
    naming the fleet process, and stop leaving nothing."""
    result = remote.start("fleet", 3, "--node-engine", "fleet")
    assert result.returncode == 0, result.stderr
    state = remote.state("fleet")
    fleets = [r for r in state["processes"].values() if r["role"] == "fleet"]
    assert len(fleets) == 1 and fleets[0]["argv"][0].startswith(str(remote.cluster_root("fleet")))
    assert psutil.Process(fleets[0]["pid"]).username() == remote.sshd.user
    keys = list((remote.cluster_root("fleet") / "pki" / "nodes").glob("*.key"))
    assert len(keys) == 3 and all(k.stat().st_mode & 0o777 == 0o600 for k in keys)
    kubeconfig = remote.cli.home / "fleet" / "kubeconfig.kubemark"
    ready = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "get", "nodes", "--no-headers"],
                           capture_output=True, text=True, timeout=60)
    assert ready.stdout.count(" Ready ") == 3, ready.stdout
    where = remote.cli.run("pod-for-node", "--name", "fleet", "hollow-node-2")
    assert where.returncode == 0 and "fleet process fleet-0" in where.stdout, where.stdout + where.stderr
    assert remote.cli.run("stop", "--name", "fleet").returncode == 0
    assert_nothing_left(remote, "fleet")
