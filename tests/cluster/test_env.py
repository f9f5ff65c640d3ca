"""`kubemark-up env`: exports that a shell takes as they are, pointing at this
cluster; SSH user and key for a master over SSH, ROOT_KUBECONFIG for hollow nodes on
a root cluster."""

from __future__ import annotations

import subprocess

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
