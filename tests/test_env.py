"""`kubemark-up env`: exports that a shell takes as they are, pointing at this
cluster; SSH user and key for a master over SSH, ROOT_KUBECONFIG for hollow nodes on
a root cluster."""

from __future__ import annotations

import subprocess
from pathlib import Path

from kubemark_up import config, envexport
from kubemark_up.state import ClusterDir, ClusterInfo, ClusterState, MasterRecord
from tests.conftest import CLUSTER_NODES, assert_one_line_error


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


def test_env_of_an_unknown_cluster_is_one_line(bare_cli):
    assert_one_line_error(bare_cli.run("env", "--name", "ghost"), 1, "no cluster named 'ghost'")


def test_env_names_the_ssh_user_key_and_root_cluster(tmp_path: Path):
    settings = config.resolve(flags={"provider": "preexisting", "nodes": 4}, environ={
        "KUBEMARK_UP_PREEXISTING_HOST": "10.0.0.5", "KUBEMARK_UP_PREEXISTING_USER": "kubernetes",
        "KUBEMARK_UP_PREEXISTING_IDENTITY_FILE": "/keys/id_ed25519", "KUBEMARK_UP_HOLLOW_NODES": "pods",
        "KUBEMARK_UP_PODS_KUBECONFIG": "/root/root.kubeconfig", "KUBEMARK_UP_PODS_IMAGE": "r.example/k:1",
    })
    cdir = ClusterDir(tmp_path, "far")
    info = ClusterInfo(name="far", provider="preexisting", settings=settings.model_dump(mode="json"))
    state = ClusterState(endpoint="https://10.0.0.5:6443", nodes=[f"hollow-node-{i}" for i in range(4)],
                         master=MasterRecord(host="kubernetes@10.0.0.5:22", addresses=["10.0.0.5"],
                                             bind_address="10.0.0.5", paths={}))
    values = envexport.exports(cdir, info, state, settings)
    assert values["KUBECONFIG"] == str(tmp_path / "far" / "kubeconfig.kubemark")
    assert values["NUM_NODES"] == "4" and values["MASTER_IP"] == "10.0.0.5"
    assert values["KUBE_SSH_USER"] == "kubernetes" and values["KUBE_SSH_KEY_PATH"] == "/keys/id_ed25519"
    assert values["ROOT_KUBECONFIG"] == "/root/root.kubeconfig"
    assert values["PROVIDER_CONFIGS"] == "ROOT_KUBECONFIG=/root/root.kubeconfig"
    # What a shell reads back is what was meant, whatever the characters.
    odd = {"A": "it's $HOME"}
    echoed = subprocess.run(["bash", "-c", envexport.shell(odd) + 'printf %s "$A"'], capture_output=True, text=True)
    assert echoed.stdout == "it's $HOME"
