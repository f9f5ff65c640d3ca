"""Step "kube-apiserver": started, then waited for at /readyz."""

from __future__ import annotations

from kubemark_up.cluster.supervision import start_and_wait, stop_components
from kubemark_up.providers.base import ClusterContext
from kubemark_up.steps import Step


def run(ctx: ClusterContext) -> None:
    start_and_wait(ctx, "kube-apiserver")


STEP = Step("kube-apiserver", "start kube-apiserver and wait for /readyz", run,
            undo=stop_components("kube-apiserver"), undo_title="stop kube-apiserver")
