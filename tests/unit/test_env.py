"""`kubemark-up env`: exports that a shell takes as they are, pointing at this
cluster; SSH user and key for a master over SSH, ROOT_KUBECONFIG for hollow nodes on
a root cluster."""

from __future__ import annotations

import subprocess
from pathlib import Path

from kubemark_up.cluster import envexport
from kubemark_up.providers.registry import resolve_settings
from kubemark_up.state import ClusterDir, ClusterInfo, ClusterState, MasterRecord
from tests.support.cli import assert_one_line_error


def test_env_of_an_unknown_cluster_is_one_line(bare_cli):
    assert_one_line_error(bare_cli.run("env", "--name", "ghost"), 1, "no cluster named 'ghost'")


def test_env_names_the_ssh_user_key_and_root_cluster(tmp_path: Path):
    settings = resolve_settings(flags={"provider": "preexisting", "nodes": 4}, environ={
        "KUBEMARK_UP_PREEXISTING_HOST": "10.0.0.5", "KUBEMARK_UP_PREEXISTING_USER": "kubernetes",
        "KUBEMARK_UP_PREEXISTING_IDENTITY_FILE": "/keys/id_ed25519", "KUBEMARK_UP_HOLLOW_NODES": "pods",
        "KUBEMARK_UP_PODS_KUBECONFIG": "/root/root.kubeconfig", "KUBEMARK_UP_PODS_IMAGE": "r.example/k:1",
    })
    cdir = ClusterDir(tmp_path, "far")
    info = ClusterInfo(name="far", provider="preexisting", settings=settings.model_dump(mode="json"))
    state = ClusterState(endpoint="https://10.0.0.5:6443", nodes=[f"hollow-node-{i}" for i in range(4)],
                         master=MasterRecord(host="kubernetes@10.0.0.5:22", addresses=["10.0.0.5"],
                                             bind_address="10.0.0.5", paths={}))
    state.ports = {"apiserver": 6443, "etcd_metrics": 2382, "controller_manager": 10257, "scheduler": 10259}
    values = envexport.exports(cdir, info, state, settings)
    assert values["KUBECONFIG"] == str(tmp_path / "far" / "kubeconfig.kubemark")
    assert values["NUM_NODES"] == "4" and values["MASTER_IP"] == "10.0.0.5"
    assert values["KUBE_SSH_USER"] == "kubernetes" and values["KUBE_SSH_KEY_PATH"] == "/keys/id_ed25519"
    assert values["KUBE_SSH_PORT"] == "22" and values["ETCD_INSECURE_PORT"] == "2382"
    assert envexport.notes(cdir, info, state, settings) == []
    assert values["ROOT_KUBECONFIG"] == "/root/root.kubeconfig"
    assert values["PROVIDER_CONFIGS"] == "ROOT_KUBECONFIG=/root/root.kubeconfig"
    # What a shell reads back is what was meant, whatever the characters.
    odd = {"A": "it's $HOME"}
    echoed = subprocess.run(["bash", "-c", envexport.shell(odd) + 'printf %s "$A"'], capture_output=True, text=True)
    assert echoed.stdout == "it's $HOME"


def _cluster(tmp_path: Path, provider: str, environ: dict[str, str], ports: dict[str, int],
             addresses: list[str]) -> tuple:
    settings = resolve_settings(flags={"provider": provider, "nodes": 2}, environ=environ)
    cdir = ClusterDir(tmp_path, "c")
    info = ClusterInfo(name="c", provider=provider, settings=settings.model_dump(mode="json"))
    state = ClusterState(endpoint=f"https://{addresses[0]}:443", nodes=["hollow-node-0", "hollow-node-1"], ports=ports,
                         master=MasterRecord(host="h", addresses=addresses, bind_address="0.0.0.0", paths={}))
    return cdir, info, state, settings


STANDARD = {"apiserver": 443, "etcd_metrics": 2382, "controller_manager": 10257, "scheduler": 10259}


def test_env_of_a_gce_master_names_the_clusters_own_ssh_key(tmp_path: Path):
    cdir, info, state, settings = _cluster(tmp_path, "gce", {
        "KUBEMARK_UP_GCE_PROJECT": "my-project", "KUBEMARK_UP_GCE_SOURCE_RANGES": "192.0.2.1/32",
    }, STANDARD, ["203.0.113.7"])
    values = envexport.exports(cdir, info, state, settings)
    # What clusterloader2 (pkg/util/ssh_core.go) and the e2e framework read to SSH to the master.
    assert values["MASTER_IP"] == "203.0.113.7" and values["KUBE_SSH_USER"] == "kubemark-up"
    assert values["KUBE_SSH_KEY_PATH"] == str(tmp_path / "c" / "pki" / "gce-ssh-key")
    assert values["KUBE_SSH_PORT"] == "22" and values["ETCD_INSECURE_PORT"] == "2382"
    assert envexport.notes(cdir, info, state, settings) == []


def test_env_says_what_keeps_clusterloader2_from_the_masters_metrics(tmp_path: Path):
    cdir, info, state, settings = _cluster(tmp_path, "preexisting", {
        "KUBEMARK_UP_PREEXISTING_HOST": "master.example", "KUBEMARK_UP_PREEXISTING_PORT": "2222",
        "KUBEMARK_UP_PREEXISTING_ADDRESS": "10.0.0.5", "KUBEMARK_UP_STANDARD_METRICS_PORTS": "false",
    }, {"apiserver": 6443, "etcd_metrics": 21001, "controller_manager": 21002, "scheduler": 21003}, ["10.0.0.5"])
    values = envexport.exports(cdir, info, state, settings)
    # SSH goes to the host as SSH reaches it, the API to the address the nodes use.
    assert values["MASTER_IP"] == "master.example" and values["MASTER_INTERNAL_IP"] == "10.0.0.5"
    assert values["KUBE_SSH_PORT"] == "2222" and values["ETCD_INSECURE_PORT"] == "21001"
    notes = envexport.notes(cdir, info, state, settings)
    assert len(notes) == 2 and "port 22 only" in notes[0] and "standard_metrics_ports: false" in notes[1]
    cdir, info, state, settings = _cluster(tmp_path, "local", {}, {"etcd_metrics": 21001}, ["127.0.0.1"])
    assert "KUBE_SSH_USER" not in envexport.exports(cdir, info, state, settings)
    (note,) = envexport.notes(cdir, info, state, settings)
    assert "run load" in note
