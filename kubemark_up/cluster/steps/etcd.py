"""Step "etcd": etcd (and etcd-events where the master has one), each healthy
before start goes on. Its undo is the master's last: anything of this cluster still
running on the master's host is stopped with it."""

from __future__ import annotations

from kubemark_up import master
from kubemark_up.cluster.supervision import start_and_wait, stop_components
from kubemark_up.providers.base import ClusterContext
from kubemark_up.steps import Step


def run(ctx: ClusterContext) -> None:
    start_and_wait(ctx, "etcd")
    if master.EVENTS in master.order(ctx.provider.master(ctx).paths):
        start_and_wait(ctx, master.EVENTS)


STEP = Step("etcd", "start etcd", run,
            undo=stop_components(master.EVENTS, "etcd", sweep=True), undo_title="stop etcd")
