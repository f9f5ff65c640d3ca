"""Stock kubemark hollow nodes as pods on a root cluster (hollow_nodes: pods,
node_engine: kubemark): the StatefulSet hollow-node of config/hollow-node.yaml, one
pod per hollow node, named after its node, running a hollow kubelet, a hollow
kube-proxy and a node-problem-detector. Each node joins by the kubelet's TLS
bootstrap with the token in the Secret."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubemark_up.config import Settings
from kubemark_up.context import Context
from kubemark_up.nodes.kubemark.args import kubelet_args, proxy_args
from kubemark_up.nodes.rootcluster.engine import PodNodes
from kubemark_up.nodes.rootcluster.objects import STATEFULSET
from kubemark_up.nodes.rootcluster.settings import PodsSettings


def requests(settings: Settings) -> dict[str, int]:
    """Per-container requests as the legacy start-kubemark.sh computed them (see the
    reference on the legacy scripts): the proxy's memory grows 50 KiB per cluster node."""
    pods = PodsSettings.of(settings)
    proxy_millicpu = pods.proxy_millicpu or (50 if settings.nodes > 1000 else 20)
    return {
        "kubelet_millicpu": pods.kubelet_millicpu, "kubelet_mem_ki": pods.kubelet_mem_ki,
        "proxy_millicpu": proxy_millicpu, "proxy_mem_ki": 100 * 1024 + pods.proxy_mem_per_node_ki * settings.nodes,
        "npd_millicpu": 20, "npd_mem_ki": 20 * 1024,
    }


class KubemarkPodNodes(PodNodes):
    statefulset = STATEFULSET
    template_file = "hollow-node.yaml"
    template_setting = "pods.template"
    kind = "hollow-node pods"
    running = "hollow-node pods Running"

    def own_template(self) -> Path | None:
        return self.settings.template

    def template_values(self, ctx: Context) -> dict[str, Any]:
        return {"kubelet_args": kubelet_args(ctx.settings), "proxy_args": proxy_args(ctx.settings),
                **requests(ctx.settings)}

    def replicas(self, nodes: int) -> int:
        return nodes

    def scaled(self, nodes: int) -> str:
        return f"scaled to {nodes} (a pod per hollow node)"

    def nodes_of(self, ctx: Context, pod: str) -> list[str]:
        return [pod]

    def pod_of(self, ctx: Context, node: str) -> tuple[str, str]:
        return node, ""
