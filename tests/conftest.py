"""Shared test fixtures: the real Kubernetes binaries, a CLI runner, one local
kubemark cluster for the whole session (real etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kubemark processes on loopback), and for
tests/unit the fake provider's World (tests/support/fakes.py).

A test that uses the binaries (the bin_dir fixture, directly or through another
fixture) is marked `cluster` by itself; `pytest -m "not cluster"` runs the rest in
seconds, with nothing built."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from kubemark_up import binaries, config
from kubemark_up.providers.registry import resolve_settings
from kubemark_up.ui import UI
from tests.support.cli import CLI, CLUSTER_NODES, RunningCluster, host_tables, kubemark_tmp_files, mounts


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
    settings = resolve_settings(flags={}, environ={})
    found = binaries.resolve(settings, config.home_dir(), UI(), sources=["build"])
    return found["kubemark"].path.parent




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














@pytest.fixture
def fake_world(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """The provider "fake" registered for this test, on a World of its own
    (tests/support/fakes.py): start and stop run without binaries or processes."""
    from tests.support.fakes import FakeProvider, World, register

    register(monkeypatch, tmp_path / "plug-ins")
    world = World()
    monkeypatch.setattr(FakeProvider, "world", world, raising=False)
    yield world
    world.close()


@pytest.fixture(scope="session")
def sshd():
    """A real, unprivileged OpenSSH server on loopback (tests/support/sshd.py)."""
    from tests.support.sshd import SSHServer

    server = SSHServer()
    server.start()
    yield server
    server.cleanup()




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
    """A real root cluster (tests/support/rootcluster.py): one at a time per machine (a lock)."""
    from tests.support.rootcluster import RootCluster

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
