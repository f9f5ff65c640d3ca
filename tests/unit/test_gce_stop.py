"""gce's stop without state and gc, fast tier: the real CLI against the strict test
endpoint, with resources put there as a cluster would have made them (no VM, no
binaries). What carries another owner's mark is left alone and said so."""

from __future__ import annotations

import re

import pytest

from kubemark_up.providers import gce, registry
from kubemark_up.state import ClusterDir, ClusterInfo
from tests.support.cli import CLI
from tests.support.gce_endpoint import ComputeEndpoint

PROJECT, ZONE, REGION = "test-project", "us-central1-b", "us-central1"
LABEL, OWNER = "kubemark-up-cluster", "kubemark-up-owner"


@pytest.fixture
def endpoint():
    with ComputeEndpoint(op_seconds=0.01) as made:
        yield made


def _env(endpoint: ComputeEndpoint) -> dict[str, str]:
    return {"KUBEMARK_UP_GCE_PROJECT": PROJECT, "KUBEMARK_UP_GCE_SOURCE_RANGES": "10.0.0.0/8",
            "KUBEMARK_UP_GCE_ENDPOINT": endpoint.url}


def made_for(endpoint: ComputeEndpoint, cluster: str, owner: str) -> set[str]:
    """What a cluster's start leaves in the project (the VM aside), marked as it marks them."""
    labels = {LABEL: cluster, OWNER: owner}
    endpoint.put("addresses", PROJECT, f"regions/{REGION}", {"name": f"kubemark-up-{cluster}-ip", "labels": labels,
                                                            "address": "127.0.0.1"})
    endpoint.put("disks", PROJECT, f"zones/{ZONE}", {"name": f"kubemark-up-{cluster}-pd", "labels": labels})
    for rule, port in (("https", "443"), ("ssh", "22")):
        endpoint.put("firewalls", PROJECT, "global", {
            "name": f"kubemark-up-{cluster}-{rule}", "network": f"projects/{PROJECT}/global/networks/default",
            "description": f"kubemark-up cluster {cluster} (owner {owner}, uid 0123456789abcdef): its {rule}",
            "sourceRanges": ["10.0.0.0/8"], "allowed": [{"IPProtocol": "tcp", "ports": [port]}]})
    return {f"address/kubemark-up-{cluster}-ip", f"disk/kubemark-up-{cluster}-pd",
            f"firewall/kubemark-up-{cluster}-https", f"firewall/kubemark-up-{cluster}-ssh"}


def test_the_owner_is_the_home_and_the_user(tmp_path):
    one, other = gce.owner(tmp_path / "a"), gce.owner(tmp_path / "b")
    assert one == gce.owner(tmp_path / "a") and one != other
    assert re.fullmatch(r"[0-9a-f]{12}", one)  # a label value


def test_gc_deletes_only_this_owners_resources(bare_cli: CLI, endpoint):
    mine = made_for(endpoint, "orphan", gce.owner(bare_cli.home))
    theirs = made_for(endpoint, "theirs", "0123456789ab")
    endpoint.put("disks", PROJECT, f"zones/{ZONE}", {"name": "kubemark-up-old-pd", "labels": {LABEL: "old"}})
    listed = bare_cli.run("gc", "--provider", "gce", "--project", PROJECT, **_env(endpoint))
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert sum(line.endswith("of cluster orphan") for line in lines) == 4, listed.stdout
    assert sum(line.startswith("skipped ") and "of cluster theirs: owner 0123456789ab, not this one" in line
               for line in lines) == 4, listed.stdout
    assert "skipped disk kubemark-up-old-pd (zones/us-central1-b) of cluster old: no owner mark" in lines
    assert lines[-1] == "5 resource(s) of other owners skipped; --all-owners includes them"

    deleted = bare_cli.run("gc", "--provider", "gce", "--project", PROJECT, "--yes", **_env(endpoint))
    assert deleted.returncode == 0, deleted.stderr
    assert sum(line.startswith("deleted ") for line in deleted.stdout.splitlines()) == 4
    assert endpoint.names() == theirs | {"disk/kubemark-up-old-pd"}
    assert not mine & endpoint.names()

    everyone = bare_cli.run("gc", "--provider", "gce", "--project", PROJECT, "--yes", "--all-owners", **_env(endpoint))
    assert everyone.returncode == 0, everyone.stderr
    assert "deleted ssh firewall kubemark-up-theirs-ssh (global) of cluster theirs (owner 0123456789ab)" in everyone.stdout
    assert endpoint.items() == []


def _cluster_json(cli: CLI, name: str) -> ClusterDir:
    """A gce cluster's cluster.json (and its files) as start writes them, its state.json lost."""
    settings = registry.resolve_settings(flags={"provider": "gce", "name": name, "nodes": 0},
                                         environ={"KUBEMARK_UP_GCE_PROJECT": PROJECT,
                                                  "KUBEMARK_UP_GCE_SOURCE_RANGES": "10.0.0.0/8"})
    cdir = ClusterDir(cli.home, name)
    cdir.save_info(ClusterInfo(name=name, provider="gce", settings=settings.model_dump(mode="json")))
    (cdir.pki / gce.KEY_FILE).write_text("a key\n")
    cdir.kubeconfig.write_text("a kubeconfig\n")
    (cdir.logs / "kube-apiserver.log").write_text("a log\n")
    return cdir


def test_stop_without_state_deletes_by_label_says_so_and_frees_the_name(bare_cli: CLI, endpoint):
    cdir = _cluster_json(bare_cli, "lost")
    made_for(endpoint, "lost", gce.owner(bare_cli.home))
    theirs = made_for(endpoint, "other", "0123456789ab")
    result = bare_cli.run("stop", "--name", "lost", **_env(endpoint))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("kubemark cluster 'lost' stopped (deleted 4 cloud resource(s) found by its labels; "
                                     "removed its runtime files (logs kept))")
    assert "stopped the processes" not in result.stdout
    assert endpoint.names() == theirs
    # The name is free: no cluster.json, no keys, no kubeconfig; the logs kept.
    assert sorted(p.name for p in cdir.root.iterdir()) == ["logs"]
    again = bare_cli.run("stop", "--name", "lost", **_env(endpoint))
    assert again.returncode == 0 and "nothing to stop" in again.stdout


def test_stop_without_state_keeps_the_files_while_a_resource_will_not_go(bare_cli: CLI, endpoint):
    cdir = _cluster_json(bare_cli, "stuck")
    made_for(endpoint, "stuck", gce.owner(bare_cli.home))
    endpoint.fault("compute.disks.delete", status=400, reason="resourceInUseByAnotherResource",
                   message="The disk resource is already being used", times=100)
    result = bare_cli.run("stop", "--name", "stuck", **_env(endpoint))
    assert result.returncode == 1
    assert "cloud resources or processes of cluster 'stuck' would not go; its files kept, run stop again" in result.stderr
    assert cdir.info_file.exists() and (cdir.pki / gce.KEY_FILE).exists()
    assert endpoint.names() == {"disk/kubemark-up-stuck-pd"}
    endpoint.faults.clear()
    assert bare_cli.run("stop", "--name", "stuck", **_env(endpoint)).returncode == 0
    assert endpoint.items() == [] and not cdir.info_file.exists()
