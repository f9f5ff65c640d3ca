"""What the cluster engine hands the CLI: typed records whose --output json keys are
those the CLI has always printed, and gc's Orphans protocol."""

from __future__ import annotations

import json

from kubemark_up.cluster.gc import Orphans
from kubemark_up.cluster.inspect import ComponentStatus, Location, MasterStatus, NodesStatus, Status
from kubemark_up.providers.gce import GCEProvider
from kubemark_up.providers.local import LocalProvider


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
