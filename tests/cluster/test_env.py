"""`kubemark-up env`: exports that a shell takes as they are, pointing at this
cluster; SSH user and key for a master over SSH, ROOT_KUBECONFIG for hollow nodes on
a root cluster."""

from __future__ import annotations

import subprocess
from pathlib import Path

from kubemark_up.providers.registry import resolve_settings
from kubemark_up.state import ClusterDir, ClusterInfo, ClusterState, MasterRecord
from tests.support.cli import CLUSTER_NODES


def test_env_exports_reach_the_cluster_from_a_shell(local_cluster):
    result = local_cluster.cli.run("env", "--name", local_cluster.name)
    assert result.returncode == 0, result.stderr
    shell = subprocess.run(
        ["bash", "-c", result.stdout + 'echo "$NUM_NODES $PROVIDER"; kubectl get nodes --no-headers | wc -l'],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin:/usr/local/bin"},
    )
    assert shell.returncode == 0, shell.stderr
    first, count = shell.stdout.split("\n")[:2]
    assert first == f"{CLUSTER_NODES} kubemark" and int(count) == CLUSTER_NODES
    assert "KUBE_SSH_USER" not in result.stdout and "ROOT_KUBECONFIG" not in result.stdout






def _cluster(tmp_path: Path, provider: str, environ: dict[str, str], ports: dict[str, int],
             addresses: list[str]) -> tuple:
    settings = resolve_settings(flags={"provider": provider, "nodes": 2}, environ=environ)
    cdir = ClusterDir(tmp_path, "c")
    info = ClusterInfo(name="c", provider=provider, settings=settings.model_dump(mode="json"))
    state = ClusterState(endpoint=f"https://{addresses[0]}:443", nodes=["hollow-node-0", "hollow-node-1"], ports=ports,
                         master=MasterRecord(host="h", addresses=addresses, bind_address="0.0.0.0", paths={}))
    return cdir, info, state, settings


STANDARD = {"apiserver": 443, "etcd_metrics": 2382, "controller_manager": 10257, "scheduler": 10259}




