"""Fleet hollow nodes as pods on a root cluster (hollow_nodes: pods, node_engine:
fleet): the StatefulSet hollow-fleet of config/hollow-fleet.yaml, pod
hollow-fleet-<o> one kubemark-fleet process carrying pods.nodes_per_pod nodes from
hollow-node-(o*nodes_per_pod) on, each node its own identity by TLS bootstrap. The
Secret carries, beside the kubeconfigs, the files the fleet reads (the token, the CA,
kube-proxy's and node-problem-detector's certificates and keys); the ConfigMap, the
fleet's config (fleet.json)."""

from __future__ import annotations

import ipaddress
import json
import math
import re
from pathlib import Path
from typing import Any

from kubemark_up import binaries
from kubemark_up.context import Context
from kubemark_up.errors import ConfigError
from kubemark_up.nodes.fleet import tuning
from kubemark_up.nodes.rootcluster.engine import PodNodes
from kubemark_up.nodes.rootcluster.objects import FLEET_STATEFULSET

# A fleet node's measured cost (benchmarks/start_to_ready.py, v1.36.3, idle nodes):
# about 0.1 mCPU and 0.4-0.45 MiB PSS from hundreds of nodes a process up; a fleet pod
# requests 0.7 MiB a node, room for pod churn, plus its process's own ~28 MiB.
FLEET_NODE_MILLICPU = 0.1
FLEET_NODE_MEM_KI = 717
FLEET_BASE_MILLICPU = 5
FLEET_BASE_MEM_KI = 32 * 1024
# Fleet nodes in pods get InternalIPs from the benchmarking range, one per node index:
# unique, and nothing here ever dials them (their connections are not bound to them).
FLEET_ADDRESSES = ipaddress.IPv4Network("198.18.0.0/15")
# Where the fleet container finds what the Secret holds (config/hollow-fleet.yaml).
_IDENTITY = "/identity"
# A fleet's log line for an Event it dropped carries the count so far (events.go); its
# error lines are rate-limited, so the last one logged is a lower bound.
_DROPPED = re.compile(r'"(?P<why>Unable to (?:record|write) event[^"]*)".*\bdropped=(?P<count>\d+)')
# The most of a fleet pod's log read for them: its start-up, where a queue overflows.
_LOG_BYTES = 4 * 1024 * 1024
# The files of pki/ the fleet reads from the Secret, besides the token.
_FILES = ("ca.crt", "kube-proxy.crt", "kube-proxy.key", "node-problem-detector.crt", "node-problem-detector.key")


def fleet_pods(nodes: int, per_pod: int) -> int:
    """How many fleet pods carry this many nodes."""
    return math.ceil(nodes / per_pod)


def fleet_pod_of(index: int, per_pod: int) -> str:
    """The fleet pod that carries hollow node number index."""
    return f"{FLEET_STATEFULSET}-{index // per_pod}"


def fleet_nodes_of(pod: str, per_pod: int, nodes: int) -> list[str]:
    """The hollow nodes that fleet pod hollow-fleet-<o> carries."""
    tail = pod.rsplit("-", 1)[-1]
    if not tail.isdigit():
        return []
    first = int(tail) * per_pod
    return [f"hollow-node-{i}" for i in range(first, min(first + per_pod, nodes))]


def fleet_requests(per_pod: int) -> dict[str, int]:
    """A fleet pod's requests, from the measured cost of its nodes."""
    return {"fleet_millicpu": math.ceil(FLEET_BASE_MILLICPU + FLEET_NODE_MILLICPU * per_pod),
            "fleet_mem_ki": FLEET_BASE_MEM_KI + FLEET_NODE_MEM_KI * per_pod}


def fleet_config(ctx: Context, nodes: int, per_pod: int) -> dict:
    """kubemark-fleet's config in every fleet pod (its Config, with a shard and bootstrap:
    kubemark_up/fleet/bootstrap.go): each pod works out its nodes from its name."""
    settings = ctx.settings

    def identity(stem: str) -> dict:
        return {"cert": f"{_IDENTITY}/{stem}.crt", "key": f"{_IDENTITY}/{stem}.key"}

    return {
        "server": ctx.state.endpoint, "ca": f"{_IDENTITY}/ca.crt", "version": binaries.pinned_version(),
        "start_window": settings.fleet_start_window, "max_pods": settings.max_pods,
        "proxy": identity("kube-proxy"), "npd": identity("node-problem-detector"), "nodes": [],
        "bind_addresses": False,
        "shard": {"node_prefix": "hollow-node-", "per_process": per_pod, "count": nodes,
                  "ordinal_env": "POD_NAME", "address_base": str(FLEET_ADDRESSES.network_address)},
        "bootstrap": {"token_file": f"{_IDENTITY}/bootstrap-token"}, **tuning(settings),
    }


class FleetPodNodes(PodNodes):
    statefulset = FLEET_STATEFULSET
    template_file = "hollow-fleet.yaml"
    template_setting = "pods.fleet_template"
    kind = "fleet pods"
    running = "nodes in fleet pods Running"  # counted in nodes, as the bar's total is

    def own_template(self) -> Path | None:
        return self.settings.fleet_template

    def template_values(self, ctx: Context) -> dict[str, Any]:
        return fleet_requests(self.settings.nodes_per_pod)

    def refuse(self, ctx: Context) -> None:
        if ctx.settings.nodes > FLEET_ADDRESSES.num_addresses - 2:
            raise ConfigError(f"fleet nodes in pods take their InternalIPs from {FLEET_ADDRESSES}: at most "
                              f"{FLEET_ADDRESSES.num_addresses - 2} nodes")

    def check(self, manifest: dict, path: Path) -> None:
        name = (manifest.get("metadata") or {}).get("name")
        if name != FLEET_STATEFULSET:  # start scales it by this name
            raise ConfigError(f"{self.template_setting} {path} must name its StatefulSet {FLEET_STATEFULSET}, "
                              f"not {name}")

    def identity_files(self, ctx: Context, token: str) -> dict[str, bytes]:
        # kubemark-fleet reads certificates and keys, and the token, as files.
        return {"bootstrap-token": token.encode(), **{name: (ctx.dir.pki / name).read_bytes() for name in _FILES}}

    def config_files(self, ctx: Context, nodes: int) -> dict[str, str]:
        return {"fleet.json": json.dumps(fleet_config(ctx, nodes, self.settings.nodes_per_pod), indent=1)}

    def replicas(self, nodes: int) -> int:
        return fleet_pods(nodes, self.settings.nodes_per_pod)

    def scaled(self, nodes: int) -> str:
        per_pod = self.settings.nodes_per_pod
        return f"scaled to {fleet_pods(nodes, per_pod)} (pods carrying {nodes} hollow nodes, {per_pod} a pod)"

    def nodes_of(self, ctx: Context, pod: str) -> list[str]:
        return fleet_nodes_of(pod, self.settings.nodes_per_pod, ctx.settings.nodes)

    def pod_of(self, ctx: Context, node: str) -> tuple[str, str]:
        per_pod = self.settings.nodes_per_pod
        pod = fleet_pod_of(int(node.rsplit("-", 1)[-1]), per_pod)  # hollow-node-<index>
        share = fleet_nodes_of(pod, per_pod, ctx.settings.nodes)
        return pod, f"; a fleet carrying {share[0]} .. {share[-1]}" if share else ""

    def whose(self, pod: str) -> str:
        return f"fleet pod {pod} "

    def at_rest(self, ctx: Context) -> list[str]:
        """Events a fleet pod could not send, from its log (a pod's status file stays in
        the pod): as on the host, a fleet that dropped any is not a faithful one."""
        problems = []
        for pod in self._pods(ctx):
            name = pod["metadata"]["name"]
            for container in (pod.get("spec") or {}).get("containers") or []:
                log = self._log(name, container["name"], limit_bytes=_LOG_BYTES)
                # Quoted here: a failed start takes the pod, and its log, away.
                if found := list(_DROPPED.finditer(log)):
                    last = max(found, key=lambda match: int(match["count"]))
                    problems.append(f"fleet pod {self.settings.namespace}/{name} dropped at least {last['count']} "
                                    f"kubelet Events (its log: {last['why']})")
        return problems
