"""Shared test fixtures: the real Kubernetes binaries, a CLI runner, and one local
kubemark cluster for the whole session (real etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kubemark processes on loopback).

A test that uses the binaries (the bin_dir fixture, directly or through another
fixture) is marked `cluster` by itself; `pytest -m "not cluster"` runs the rest in
seconds, with nothing built."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from kubemark_up import binaries, config
from kubemark_up.hosts import MARKER_ENV
from kubemark_up.ui import UI

CLUSTER_NODES = 3


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "bin_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    """The Kubernetes binaries: $KUBEMARK_UP_BIN_DIR, else the user's cache, built from
    the Go recipe if it is not there yet (.ci/run builds it before the tests)."""
    if os.environ.get("KUBEMARK_UP_BIN_DIR"):
        return Path(os.environ["KUBEMARK_UP_BIN_DIR"])
    settings = config.resolve(flags={}, environ={})
    found = binaries.resolve(settings, config.home_dir(), UI(), sources=["build"])
    return found["kubemark"].path.parent


@dataclass
class CLI:
    home: Path
    bin_dir: Path | None

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBEMARK_UP_")}
        env["KUBEMARK_UP_HOME"] = str(self.home)
        if self.bin_dir is not None:
            env["KUBEMARK_UP_BIN_DIR"] = str(self.bin_dir)
        # Never reach for the internet from a test.
        env["KUBEMARK_UP_BINARY_SOURCES"] = "build"
        # Most tests exercise stock kubemark processes (their PIDs, logs, /tmp files,
        # iptables); the fleet's own tests say --node-engine fleet, which wins.
        env["KUBEMARK_UP_NODE_ENGINE"] = "kubemark"
        env.update(extra)
        return env

    def run(self, *args: str, timeout: float = 300, **extra_env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "kubemark_up", *args],
            env=self.env(**extra_env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def popen(self, *args: str, **extra_env: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "kubemark_up", *args],
            env=self.env(**extra_env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


@pytest.fixture
def cli(tmp_path: Path, bin_dir: Path) -> CLI:
    """A CLI with the real binaries."""
    return CLI(home=tmp_path / "home", bin_dir=bin_dir)


@pytest.fixture
def bare_cli(tmp_path: Path) -> CLI:
    """A CLI without binaries (an empty --bin-dir): for what must fail before needing them."""
    empty = tmp_path / "no-binaries"
    empty.mkdir()
    return CLI(home=tmp_path / "home", bin_dir=empty)


def marked_processes(cluster_dir: Path) -> list[psutil.Process]:
    """Live processes carrying this cluster's marker (what stop must leave none of)."""
    found = []
    for process in psutil.process_iter():
        try:
            value = process.environ().get(MARKER_ENV, "")
            ours = value == str(cluster_dir) or value.startswith(f"{cluster_dir}#")
            if ours and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def kubemark_tmp_files() -> set[str]:
    """What stock hollow kubelets leave in /tmp (root folders, fake CRI sockets)."""
    return {str(p) for pattern in ("hollow-kubelet.*", "kubelet_remote_*.sock") for p in Path("/tmp").glob(pattern)}


def host_tables() -> str:
    """This machine's iptables and ip6tables rules and chains, without counters or the
    comment lines iptables-save stamps with the time: what a test compares before and after."""
    dumps = []
    for tool in ("iptables-save", "ip6tables-save"):
        result = subprocess.run([tool], capture_output=True, text=True, check=True)
        dumps += [line.split(" [")[0] for line in result.stdout.splitlines() if not line.startswith("#")]
    return "\n".join(dumps)


def mounts() -> list[str]:
    return sorted(Path("/proc/self/mounts").read_text().splitlines())


def listening(ports) -> list[int]:
    wanted = set(ports)
    return sorted(
        {c.laddr.port for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.laddr.port in wanted}
    )


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    # Progress lines may come first; the error is one line (its detail, a log tail,
    # follows it), and there is exactly one.
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


@pytest.fixture(scope="session")
def sshd():
    """A real, unprivileged OpenSSH server on loopback (tests/sshd.py)."""
    from tests.sshd import SSHServer

    server = SSHServer()
    server.start()
    yield server
    server.cleanup()


@dataclass
class RunningCluster:
    cli: CLI
    name: str
    start: subprocess.CompletedProcess
    tmp_before: set[str]
    host_before: tuple[str, list[str]] | None = None  # iptables and mounts before start

    @property
    def dir(self) -> Path:
        return self.cli.home / self.name

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig.kubemark"

    def state(self) -> dict:
        return json.loads((self.dir / "state.json").read_text())

    def kubectl(self, *args: str, timeout: float = 60, kubeconfig: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["kubectl", "--kubeconfig", str(kubeconfig or self.kubeconfig), *args],
            capture_output=True, text=True, timeout=timeout,
        )


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory, bin_dir: Path):
    """One local cluster of CLUSTER_NODES hollow nodes, shared by the session."""
    cli = CLI(home=tmp_path_factory.mktemp("home"), bin_dir=bin_dir)
    name = "shared"
    before = kubemark_tmp_files()
    tables = host_tables() if shutil.which("iptables-save") else ""
    result = cli.run("start", "--name", name, "--nodes", str(CLUSTER_NODES), timeout=600)
    cluster = RunningCluster(cli, name, result, before)
    cluster.host_before = (tables, mounts())
    try:
        assert result.returncode == 0, result.stderr
        yield cluster
    finally:
        if (cluster.dir / "state.json").exists():
            cli.run("stop", "--name", name)


@pytest.fixture(scope="session")
def root_cluster(tmp_path_factory, bin_dir):
    """A real root cluster (tests/rootcluster.py): one at a time per machine (a lock)."""
    from tests.rootcluster import RootCluster

    if os.geteuid() != 0:
        pytest.fail("the root cluster needs root (containerd, runc, a bridge); CI runs as root")
    folder = tmp_path_factory.mktemp("root-cluster")
    cluster = RootCluster(folder=folder / "node", cli=CLI(home=folder / "home", bin_dir=bin_dir))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def hollow_image(root_cluster, tmp_path_factory, bin_dir) -> str:
    """The hollow-node image, built here and pushed to the root cluster's registry by
    `kubemark-up image push`: what it printed (repository@digest)."""
    cli = CLI(home=tmp_path_factory.mktemp("image-home"), bin_dir=bin_dir)
    result = cli.run("image", "push", f"{root_cluster.registry}/kubemark:test", timeout=900)
    assert result.returncode == 0, result.stderr
    pushed = result.stdout.strip().splitlines()[-1]
    assert pushed.startswith(f"{root_cluster.registry}/kubemark@sha256:")
    return pushed
