"""What the cluster engine hands the CLI: typed records whose --output json keys are
those the CLI has always printed, gc's Orphans protocol, and --dry-run drawn from the steps."""

from __future__ import annotations

import json

from kubemark_up import cluster
from kubemark_up.cluster.gc import Orphans
from kubemark_up.cluster.inspect import ComponentStatus, Location, MasterStatus, NodesStatus, Status
from kubemark_up.providers import registry
from kubemark_up.providers.gce import GCEProvider
from kubemark_up.providers.local import LocalProvider
from kubemark_up.ui import UI


def test_status_json_keeps_its_keys_in_order():
    component = ComponentStatus(name="etcd", pid=2, supervisor_pid=1, restarts=0, running=True, healthy=True,
                                log="/l/etcd.log")
    status = Status(
        name="c", provider="local", phase="running", created_at="2026-12-07T00:00:00Z", endpoint="https://h:1",
        master_host="localhost", kubeconfig="/k", logs="/l", healthy=False,
        master=MasterStatus(healthy=True, components=[component]),
        nodes=NodesStatus(total=3, ready=None, processes_running=3, error="no kubeconfig"),
    )
    document = json.loads(json.dumps(status.to_json()))
    assert list(document) == ["name", "provider", "phase", "created_at", "endpoint", "master_host", "kubeconfig",
                              "logs", "healthy", "master", "nodes"]
    assert document["master"] == {"healthy": True, "components": [
        {"name": "etcd", "pid": 2, "supervisor_pid": 1, "restarts": 0, "running": True, "healthy": True,
         "log": "/l/etcd.log"}]}
    assert document["nodes"] == {"total": 3, "ready": None, "processes_running": 3, "error": "no kubeconfig"}


def test_location_json_keeps_its_keys():
    where = Location(node="hollow-node-1", provider="local", where="kubemark processes on localhost",
                     processes=[{"process": "kubelet", "pid": 7, "running": True, "log": "/l/k.log"}])
    assert where.to_json() == {"node": "hollow-node-1", "provider": "local", "where": "kubemark processes on localhost",
                               "processes": [{"process": "kubelet", "pid": 7, "running": True, "log": "/l/k.log"}]}


def test_only_a_provider_with_cloud_resources_has_orphans():
    assert issubclass(GCEProvider, Orphans)
    assert not issubclass(LocalProvider, Orphans)


def test_dry_run_lists_the_steps_with_each_plan_under_its_step(tmp_path):
    settings = registry.resolve_settings(flags={"name": "dry", "nodes": 2, "node_engine": "kubemark"}, environ={})
    lines = cluster.plan(settings, tmp_path, UI())
    assert lines[0] == "start would, in order:"
    assert lines.index("- start etcd") < lines.index("- nodes")
    under_nodes = lines[lines.index("- nodes") + 1:]
    assert under_nodes and under_nodes[0].startswith("  2 hollow nodes")
    assert list(tmp_path.iterdir()) == []  # nothing made
