"""The node engines without a cluster: the registry by the names the user types, the
--dry-run plans, and the pods variants making exactly what the single pods engine
made before it was split (nodes_pods_before.json, captured from it through the same
fakes)."""

from __future__ import annotations

import contextlib
import json
import types
from pathlib import Path

import pytest
from kubernetes.client.exceptions import ApiException

from kubemark_up import binaries, config
from kubemark_up.errors import ConfigError
from kubemark_up.hosts import LocalHost
from kubemark_up.master import MasterPaths
from kubemark_up.nodes import NodeSite
from kubemark_up.nodes.fleet import pods as fleet_pods
from kubemark_up.nodes.registry import engine_for
from kubemark_up.nodes.rootcluster import objects
from kubemark_up.nodes.rootcluster.settings import PodsSettings

BEFORE = Path(__file__).parent / "nodes_pods_before.json"
CONFIG = Path(__file__).parents[2] / "config"


def _ctx(tmp: Path, engine: str, pods: dict | None = None, **settings: object) -> tuple[types.SimpleNamespace, list]:
    pki = tmp / "pki"
    pki.mkdir(parents=True, exist_ok=True)
    for name in ("ca.crt", "kube-proxy.crt", "kube-proxy.key", "node-problem-detector.crt", "node-problem-detector.key"):
        (pki / name).write_bytes(f"<{name}>".encode())
    section = {"image": "registry.test/kubemark:v1", "namespace": "hollow", "nodes_per_pod": 3,
               "template": CONFIG / "hollow-node.yaml", "fleet_template": CONFIG / "hollow-fleet.yaml",
               "proxy_mem_per_node_ki": 60, "kubeconfig": Path("/nonexistent/root.kubeconfig"), "context": "ctx1",
               **(pods or {})}
    values = {"nodes": 5, "node_engine": engine, "hollow_nodes": "pods", "max_pods": 30, "hollow_node_labels": "a=b",
              "kube_api_content_type": "application/vnd.kubernetes.protobuf", "hollow_kubelet_extra_args": ["--x=1"],
              "fleet_start_window": 7, "pods": PodsSettings(**section).model_dump(mode="json"), **settings}
    created: list = []

    @contextlib.contextmanager
    def creating(kind, id, *, step, **details):
        created.append((kind, id, step, details))
        yield None

    ctx = types.SimpleNamespace(
        settings=config.Settings(**values), state=types.SimpleNamespace(endpoint="https://10.0.0.1:6443", nodes=[]),
        info=types.SimpleNamespace(name="golden", uid="0123456789abcdef"), dir=types.SimpleNamespace(pki=pki),
        save=lambda: None, creating=creating, resources=lambda step: [], ui=None)
    return ctx, created


class _NotFound:
    """A client whose every call answers 404."""

    def __getattr__(self, name):
        def call(*args, **kwargs):
            raise ApiException(status=404)
        return call


PODS = [
    {"metadata": {"name": "P-0"}, "status": {"phase": "Running", "containerStatuses": [
        {"name": "kubelet", "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}},
    {"metadata": {"name": "P-1"}, "status": {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "no room"}],
        "containerStatuses": [{"name": "hollow", "image": "registry.test/kubemark:v1",
                               "state": {"waiting": {"reason": "ImagePullBackOff", "message": "nope"}}}]}},
]


def _observe(engine_name: str, tmp: Path, monkeypatch) -> dict:
    """What the pods engine makes, scales, reports and sweeps, through fakes."""
    monkeypatch.setattr(binaries, "pinned_version", lambda: "v9.9.9")
    monkeypatch.setattr(objects, "new_token", lambda: ("abcdef", "0123456789abcdef"))
    ctx, _ = _ctx(tmp, engine_name)
    engine = engine_for("pods", engine_name).build(ctx)
    made: list = []
    engine._ensure = lambda ctx, where, body, create, **kw: made.append([where, body])
    engine.master = lambda ctx: types.SimpleNamespace(core=_NotFound(), rbac=_NotFound())
    engine._root = types.SimpleNamespace(core=_NotFound(), apps=_NotFound(), rbac=_NotFound())
    engine._bootstrap_on_master(ctx)
    engine._objects_on_root(ctx, "registry.test/kubemark@sha256:00", 5)
    calls: list = []
    engine._call = lambda what, call, *a, **k: calls.append([what, list(a), k])
    engine.start(ctx, ["hollow-node-0", "hollow-node-1", "hollow-node-2", "hollow-node-3"])
    prefix = "hollow-fleet-" if engine_name == "fleet" else "hollow-node-"
    pods = json.loads(json.dumps(PODS).replace("P-", prefix))
    engine._pods = lambda ctx: pods
    engine._log_tail = lambda pod, container, previous=False, lines=15: f"l1\nl2\n{pod}/{container}"
    failed = {k: [v.why, v.log, v.log_tail] for k, v in engine.failed(ctx).items()}
    deleted: list = []
    engine._delete = lambda ctx, details: deleted.append(details) or []
    engine.stop(types.SimpleNamespace(**{**vars(ctx), "state": types.SimpleNamespace(steps={}),
                                         "resources": lambda step: []}))
    body = {"spec": {"nodeName": "root-1"}, "status": {"phase": "Running", "podIP": "10.1.0.4", "containerStatuses": [
        {"name": "kubelet", "restartCount": 1, "state": {"running": {}}}]}}
    seen: list = []

    def read_pod(name, ns, **kwargs):
        seen.append([name, ns])
        return types.SimpleNamespace(data=json.dumps(body))

    engine._root = types.SimpleNamespace(core=types.SimpleNamespace(read_namespaced_pod=read_pod))
    located = engine.locate(ctx, "hollow-node-4")
    return {"located": [seen, located.node, located.where, located.details], "made": made, "scale": calls,
            "progress": list(engine.progress(ctx)), "failed": failed, "diagnose": engine.diagnose(ctx),
            "swept": deleted, "where": engine.where}


@pytest.mark.parametrize("engine", ["kubemark", "fleet"])
def test_pods_variants_make_and_say_what_the_single_engine_did(engine, tmp_path, monkeypatch):
    before = json.loads(BEFORE.read_text())[engine]
    now = json.loads(json.dumps(_observe(engine, tmp_path, monkeypatch)))
    for key in before:
        assert now[key] == before[key], key


@pytest.mark.parametrize("engine", ["kubemark", "fleet"])
def test_pods_variants_render_the_packaged_template_when_none_is_set(engine, tmp_path):
    ctx, _ = _ctx(tmp_path, engine)
    own, _ = _ctx(tmp_path, engine, pods={"template": None, "fleet_template": None})
    variant = engine_for("pods", engine)
    assert variant.build(own).render(own, image="i") == variant.build(ctx).render(ctx, image="i")


def test_fleet_pods_refuse_a_template_naming_another_statefulset(tmp_path):
    template = tmp_path / "fleet.yaml"
    template.write_text((CONFIG / "hollow-fleet.yaml").read_text().replace("name: hollow-fleet", "name: other", 1))
    ctx, _ = _ctx(tmp_path, "fleet", pods={"fleet_template": template})
    with pytest.raises(ConfigError, match=r"pods\.fleet_template .* must name its StatefulSet hollow-fleet, not other"):
        engine_for("pods", "fleet").build(ctx).render(ctx, image="i")


def test_the_registry_knows_the_four_engines_by_the_names_the_user_types():
    names = {(p, e): engine_for(p, e).__name__ for p in ("host", "pods") for e in ("kubemark", "fleet")}
    assert names == {("host", "kubemark"): "KubemarkHostNodes", ("host", "fleet"): "FleetHostNodes",
                     ("pods", "kubemark"): "KubemarkPodNodes", ("pods", "fleet"): "FleetPodNodes"}
    with pytest.raises(ConfigError) as error:
        engine_for("cloud", "fleet")
    assert str(error.value).count("\n") == 0
    assert "hollow_nodes: cloud" in str(error.value) and "host/kubemark, host/fleet, pods/kubemark, pods/fleet" in str(error.value)


def test_plans_list_what_start_would_make_and_make_nothing(tmp_path):
    ctx, created = _ctx(tmp_path, "kubemark", nodes=120)
    lines = engine_for("pods", "kubemark").build(ctx).plan(ctx)
    assert lines == [
        "- on the kubemark master: Secret kube-system/bootstrap-token-<id>, ClusterRoleBindings "
        "kubemark-up:node-bootstrapper, kubemark-up:node-autoapprove, kubemark-up:node-renewal, "
        "kubemark-up:node-problem-detector",
        "- on the root cluster (/nonexistent/root.kubeconfig): Namespace hollow (unless it is there), Secret "
        "hollow/hollow-node-identity, ConfigMap hollow/hollow-node-config, StatefulSet hollow/hollow-node "
        "scaled to 120 (a pod per hollow node)",
    ]
    ctx, created = _ctx(tmp_path, "fleet", nodes=7)
    assert engine_for("pods", "fleet").build(ctx).plan(ctx)[1].endswith(
        "StatefulSet hollow/hollow-fleet scaled to 3 (pods carrying 7 hollow nodes, 3 a pod)")
    assert created == []
    site = NodeSite(host=LocalHost(), paths=MasterPaths(pki_dir="p", kubeconfig_dir="k", data_dir="d", bin_dir="b",
                                                       log_dir="l"))
    host = LocalHost().name
    assert engine_for("host", "kubemark").build(ctx, site).plan(ctx) == [f"7 hollow nodes as kubemark processes on {host}"]
    assert engine_for("host", "fleet").build(ctx, site).plan(ctx) == [f"7 hollow nodes in fleet processes on {host}"]


def test_fleet_pods_shares_and_requests():
    """Pod o carries hollow-node-(o*K) .. hollow-node-(o*K+K-1), the last pod fewer;
    requests from a fleet node's measured cost."""
    assert fleet_pods.fleet_pods(5, 3) == 2 and fleet_pods.fleet_pods(6, 3) == 2 and fleet_pods.fleet_pods(1, 500) == 1
    assert fleet_pods.fleet_nodes_of("hollow-fleet-0", 3, 5) == ["hollow-node-0", "hollow-node-1", "hollow-node-2"]
    assert fleet_pods.fleet_nodes_of("hollow-fleet-1", 3, 5) == ["hollow-node-3", "hollow-node-4"]
    assert [fleet_pods.fleet_pod_of(i, 3) for i in (0, 2, 3, 4)] == ["hollow-fleet-0"] * 2 + ["hollow-fleet-1"] * 2
    assert fleet_pods.fleet_requests(500) == {"fleet_millicpu": 55, "fleet_mem_ki": 32 * 1024 + 500 * 717}


def test_fleet_pods_that_dropped_events_fail_start_with_the_count_their_logs_give(tmp_path):
    ctx, _ = _ctx(tmp_path, "fleet")
    engine = engine_for("pods", "fleet").build(ctx)
    logs = {
        "hollow-fleet-0": 'I1207 18:00:00.1 1 kubelet.go:190] "Registered" node="hollow-node-0"\n',
        "hollow-fleet-1": (
            'E1207 18:00:01.2 1 events.go:172] "Unable to record event: too many queued events, dropped event" '
            'node="hollow-node-3" object="default/hollow-node-3" reason="NodeHasSufficientMemory" dropped=2\n'
            'E1207 18:00:01.3 1 events.go:172] "Unable to record event: too many queued events, dropped event" '
            'node="hollow-node-4" object="default/hollow-node-4" reason="Starting" dropped=7 linesLeftOutBefore=4\n'),
    }
    pods = [{"metadata": {"name": name}, "spec": {"containers": [{"name": "hollow-fleet"}]}} for name in logs]
    engine._pods = lambda ctx: pods
    engine._log = lambda pod, container, **options: logs[pod]
    assert engine.at_rest(ctx) == ["fleet pod hollow/hollow-fleet-1 dropped at least 7 kubelet Events "
                                   "(its log: Unable to record event: too many queued events, dropped event)"]
    logs["hollow-fleet-1"] = ""
    assert engine.at_rest(ctx) == []
