"""load: the mix of clusterloader2's load test (kubernetes/perf-tests,
clusterloader2/testing/load/config.yaml), at pods_per_node pods per Ready node:
one namespace per 100 nodes; in each, a quarter of its pods in Deployments of 250,
a quarter in Deployments of 30, the rest in Deployments of 5; a Service for every
other Deployment, and a ConfigMap and a Secret per Deployment, mounted by its pods.
Then its phases: create (paced in pods/s), wait Running, scale (each Deployment to a
random size in [X/2, 3X/2], paced by the pods that come or go), update (a new pod
template: every pod replaced, paced in pods/s), delete (paced in pods/s), each
waited for. The random sizes come from `seed`, so two runs scale alike."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from pydantic import Field

from kubemark_up.run.model import RUN_LABEL
from kubemark_up.run.workloads.base import (
    Pacer,
    Plan,
    RunContext,
    Workload,
    WorkloadOptions,
    deployment,
    pod_template,
    pods_left,
    settled,
)

NODES_PER_NAMESPACE = 100
BIG, MEDIUM, SMALL = 250, 30, 5


class LoadOptions(WorkloadOptions):
    configmaps: bool = True
    secrets: bool = True
    services: bool = True
    seed: int = Field(0, ge=0)


@dataclass
class Group:
    namespace_index: int
    name: str
    replicas: int
    service: bool


class Load(Workload):
    name = "load"
    summary = "clusterloader2's load mix (Deployments of 250/30/5, Services, ConfigMaps, Secrets): create, scale, update, delete"
    options_model = LoadOptions
    options: LoadOptions

    def groups(self, nodes: int) -> list[Group]:
        namespaces = max(1, math.ceil(nodes / NODES_PER_NAMESPACE))
        total = nodes * self.options.pods_per_node
        found: list[Group] = []
        for ns in range(namespaces):
            pods = total // namespaces + (1 if ns < total % namespaces else 0)
            big = pods // (4 * BIG)
            medium = pods // (4 * MEDIUM)
            rest = pods - big * BIG - medium * MEDIUM
            sizes = [BIG] * big + [MEDIUM] * medium + [SMALL] * (rest // SMALL) + ([rest % SMALL] if rest % SMALL else [])
            labels = {BIG: "big", MEDIUM: "medium"}
            for index, size in enumerate(sizes):
                kind = labels.get(size, "small")
                found.append(Group(ns, f"{kind}-deployment-{index}", size, service=index % 2 == 0))
        return found

    def watched(self, run: RunContext) -> str | None:
        return "/apis/apps/v1/deployments"

    def plan(self, nodes: int) -> Plan:
        groups = self.groups(nodes)
        pods = sum(g.replicas for g in groups)
        namespaces = len({g.namespace_index for g in groups})
        per_group = 2 + int(self.options.configmaps) + int(self.options.secrets)  # Deployment, ReplicaSet, ...
        services = sum(1 for g in groups if g.service) if self.options.services else 0
        # Scaling makes up to 1.5x the pods, and the update replaces every pod (a second ReplicaSet).
        created_pods = math.ceil(1.5 * pods) * 2
        return Plan(objects=namespaces + per_group * len(groups) + len(groups) + 2 * services + created_pods,
                    pods=created_pods,
                    phases=["create", "wait Running", "scale", "wait scaled", "update", "wait updated", "delete",
                            "wait deleted"])

    def _path(self, run: RunContext, group: Group, kind: str) -> str:
        namespace = run.namespace(group.namespace_index)
        base = "/api/v1" if kind in ("configmaps", "secrets", "services") else "/apis/apps/v1"
        return f"{base}/namespaces/{namespace}/{kind}"

    def run(self, run: RunContext) -> None:
        groups = self.groups(run.nodes)
        options = self.options
        total = sum(g.replicas for g in groups)
        run.progress.target = total
        pacer = run.phase("create", rate=options.rate, items=total)
        assert pacer is not None
        for group in groups:
            if options.services and group.service:
                run.create(self._path(run, group, "services"), {
                    "apiVersion": "v1", "kind": "Service", "metadata": {"name": group.name},
                    "spec": {"selector": {RUN_LABEL: run.run_id, "app": group.name},
                             "ports": [{"port": 80, "targetPort": 80}]},
                })
        for group in groups:
            pacer.take(group.replicas)
            volumes = []
            if options.configmaps:
                run.create(self._path(run, group, "configmaps"), {
                    "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": group.name},
                    "data": {"data.yaml": f"a: 1\nb: {group.replicas}\n"},
                })
                volumes.append({"volume": {"name": "configmap", "configMap": {"name": group.name}},
                                "mount": {"name": "configmap", "mountPath": "/var/configmap"}})
            if options.secrets:
                run.create(self._path(run, group, "secrets"), {
                    "apiVersion": "v1", "kind": "Secret", "metadata": {"name": group.name},
                    "stringData": {"password": "not-a-secret"},
                })
                volumes.append({"volume": {"name": "secret", "secret": {"secretName": group.name}},
                                "mount": {"name": "secret", "mountPath": "/var/secret"}})
            template = pod_template(run, group.name, options.image, volumes=volumes)
            run.create(self._path(run, group, "deployments"), deployment(run, group.name, group.replicas, template))
        namespaces = sorted({g.namespace_index for g in groups})
        run.phase("wait Running")
        run.wait(f"{total} pods Running",
                 lambda: settled(run, namespaces, {(g.namespace_index, g.name): g.replicas for g in groups}))

        rng = random.Random(options.seed)
        targets = {(g.namespace_index, g.name): rng.randint(max(1, math.ceil(g.replicas / 2)), max(1, (3 * g.replicas) // 2))
                   for g in groups}
        changed = sum(abs(targets[g.namespace_index, g.name] - g.replicas) for g in groups)
        pacer = run.phase("scale", rate=options.rate, items=changed)
        assert pacer is not None
        for group in groups:
            self._pace(pacer, abs(targets[group.namespace_index, group.name] - group.replicas))
            run.check()
            run.kube.request("PATCH", f"{self._path(run, group, 'deployments')}/{group.name}/scale",
                             body={"spec": {"replicas": targets[group.namespace_index, group.name]}},
                             content_type="application/merge-patch+json")
        run.phase("wait scaled")
        run.wait(f"{sum(targets.values())} pods after scaling", lambda: settled(run, namespaces, targets))

        pacer = run.phase("update", rate=options.rate, items=sum(targets.values()))
        assert pacer is not None
        for group in groups:
            self._pace(pacer, targets[group.namespace_index, group.name])
            run.check()
            run.kube.request("PATCH", f"{self._path(run, group, 'deployments')}/{group.name}", body={
                "spec": {"template": {"metadata": {"annotations": {"kubemark-up.run/update": "1"}}}},
            }, content_type="application/merge-patch+json")
        run.phase("wait updated")
        run.wait("every pod replaced", lambda: settled(run, namespaces, targets))

        pacer = run.phase("delete", rate=options.rate, items=sum(targets.values()))
        assert pacer is not None
        for group in groups:
            self._pace(pacer, targets[group.namespace_index, group.name])
            run.delete(f"{self._path(run, group, 'deployments')}/{group.name}")
            for kind, wanted in (("configmaps", options.configmaps), ("secrets", options.secrets),
                                 ("services", options.services and group.service)):
                if wanted:
                    run.delete(f"{self._path(run, group, kind)}/{group.name}")
        run.phase("wait deleted")
        run.wait("the pods to be deleted", lambda: not any(pods_left(run, run.namespace(i)) for i in namespaces))
        run.finish()

    @staticmethod
    def _pace(pacer: Pacer, items: int) -> None:
        if items:
            pacer.take(items)
