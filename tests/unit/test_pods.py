"""Hollow nodes as pods on a real root cluster (tests/support/rootcluster.py: a real kubelet
with containerd, runc and a CNI bridge, and a registry on loopback): the pods run as
real containers and register Ready nodes with the kubemark master, each with its own
identity from the kubelet's TLS bootstrap."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from kubemark_up.nodes.fleet import pods as pods_mod
from tests.support.cli import CLI
from tests.support.rootcluster import GATEWAY, RootCluster

NODES = 3
SHARED = "hollow-shared"  # the namespace of the cluster the read-only tests share


def pods_config(path: Path, root: RootCluster, image: str, **pods: object) -> Path:
    path.write_text(yaml.safe_dump({
        "hollow_nodes": "pods",
        "local": {"address": GATEWAY},  # the pods reach the master on the bridge's address
        "pods": {"kubeconfig": str(root.kubeconfig), "image": image, **pods},
    }))
    return path


def _ki(quantity: str) -> int:
    """A memory quantity as the apiserver writes it back (100Mi for 102400Ki), in KiB."""
    for suffix, factor in (("Ki", 1), ("Mi", 1024), ("Gi", 1024 * 1024)):
        if quantity.endswith(suffix):
            return int(quantity[: -len(suffix)]) * factor
    return int(quantity) // 1024


def _tag(pushed: str) -> str:
    return pushed.split("@")[0] + ":test"


@pytest.fixture(scope="module")
def pods_cluster(root_cluster, hollow_image, tmp_path_factory, bin_dir):
    folder = tmp_path_factory.mktemp("pods-cluster")
    cli = CLI(home=folder / "home", bin_dir=bin_dir)
    # Its own namespace: the tests that start clusters of their own use the default one.
    config = pods_config(folder / "config.yaml", root_cluster, _tag(hollow_image), namespace=SHARED)
    result = cli.run("start", "--name", "pods", "--nodes", str(NODES), "--config", str(config), timeout=900)
    assert result.returncode == 0, result.stderr
    yield cli, result
    cli.run("stop", "--name", "pods", timeout=600)


def _kubectl(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True,
                          timeout=60)


def _root_pods(root: RootCluster, namespace: str = "kubemark") -> list[dict]:
    got = root.kubectl("-n", namespace, "get", "pods", "-o", "json")
    return json.loads(got.stdout)["items"] if got.returncode == 0 else []
























def test_fleet_pods_shares_and_requests():
    """Pod o carries hollow-node-(o*K) .. hollow-node-(o*K+K-1), the last pod fewer;
    requests from a fleet node's measured cost."""
    assert pods_mod.fleet_pods(5, 3) == 2 and pods_mod.fleet_pods(6, 3) == 2 and pods_mod.fleet_pods(1, 500) == 1
    assert pods_mod.fleet_nodes_of("hollow-fleet-0", 3, 5) == ["hollow-node-0", "hollow-node-1", "hollow-node-2"]
    assert pods_mod.fleet_nodes_of("hollow-fleet-1", 3, 5) == ["hollow-node-3", "hollow-node-4"]
    assert [pods_mod.fleet_pod_of(i, 3) for i in (0, 2, 3, 4)] == ["hollow-fleet-0"] * 2 + ["hollow-fleet-1"] * 2
    assert pods_mod.fleet_requests(500) == {"fleet_millicpu": 55, "fleet_mem_ki": 32 * 1024 + 500 * 717}


def _subject(pem: bytes, kind: str) -> str:
    """The subject of a PEM CSR (kind req) or certificate (x509), as openssl prints it."""
    shown = subprocess.run(["openssl", kind, "-noout", "-subject", "-nameopt", "RFC2253"], input=pem,
                           capture_output=True, timeout=30)
    assert shown.returncode == 0, shown.stderr
    return shown.stdout.decode().strip().removeprefix("subject=").strip()


