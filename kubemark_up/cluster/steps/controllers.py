"""Step "controllers": kube-controller-manager and kube-scheduler, started; their
health is checked by the "nodes" step, after the nodes."""

from __future__ import annotations

from kubemark_up.cluster.supervision import start_component, stop_components
from kubemark_up.providers.base import ClusterContext
from kubemark_up.steps import Step


def run(ctx: ClusterContext) -> None:
    # Started only once the apiserver is ready: the controller-manager exits at once if
    # RBAC bootstrap has not finished. Their health is checked alongside the nodes'.
    for name in ("kube-controller-manager", "kube-scheduler"):
        start_component(ctx, name)


STEP = Step("controllers", "start kube-controller-manager and kube-scheduler", run,
            undo=stop_components("kube-controller-manager", "kube-scheduler"),
            undo_title="stop kube-controller-manager and kube-scheduler")
