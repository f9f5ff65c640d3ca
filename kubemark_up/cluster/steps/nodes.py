"""Step "nodes": the hollow nodes, started in waves by the provider's node engine
while the master is watched; then the controllers' health."""

from __future__ import annotations

import time

from kubemark_up import readiness
from kubemark_up.cluster.supervision import CRASH_LOOP_RESTARTS, LOG_TAIL_LINES, check_master, wait_healthy
from kubemark_up.config import Settings
from kubemark_up.errors import ComponentError, KubemarkUpError
from kubemark_up.nodes import NodeEngine
from kubemark_up.providers.base import ClusterContext
from kubemark_up.steps import Step


def node_names(settings: Settings) -> list[str]:
    return [f"hollow-node-{i}" for i in range(settings.nodes)]


def run(ctx: ClusterContext) -> None:
    """Start the hollow nodes in waves, each Ready before the next starts, with one
    progress bar; fail fast when the master or too many nodes die meanwhile."""
    site = ctx.provider.master(ctx)
    names = node_names(ctx.settings)
    deadline = time.monotonic() + ctx.settings.nodes_ready_timeout
    if names:
        engine = ctx.provider.node_engine(ctx)
        with ctx.ui.step(f"prepare {len(names)} hollow nodes ({engine.name} on {engine.where})"):
            engine.prepare(ctx, names)
        wave = ctx.settings.node_start_wave or engine.wave_size(ctx) or len(names)
        warned: set[str] = set()

        def check() -> None:
            check_master(ctx, site, warned)
            failed = engine.failed(ctx)
            if len(failed) > ctx.settings.allowed_not_ready:
                node, failure = next(iter(failed.items()))
                raise ComponentError(
                    f"{len(failed)} hollow node(s) failed; {node}: {failure.why} (log: {failure.log})",
                    detail=failure.log_tail or site.host.tail(failure.log, LOG_TAIL_LINES),
                )

        with readiness.ReadyWatch(ctx.dir.kubeconfig, names=names, ui=ctx.ui,
                                  also=lambda: engine.progress(ctx)) as watch:
            for first in range(0, len(names), wave):
                engine.start(ctx, names[first : first + wave])
                started = min(len(names), first + wave)
                try:
                    ready = watch.wait(need=max(0, started - ctx.settings.allowed_not_ready), deadline=deadline,
                                       check=check)
                except ComponentError as exc:
                    if exc.detail or not (why := _diagnose(engine, ctx)):
                        raise
                    raise ComponentError(exc.message, detail=why) from None
        ctx.state.nodes_ready = ready
        if problems := engine.at_rest(ctx):
            raise ComponentError(f"the hollow nodes are Ready but {problems[0]}", detail="\n".join(problems[1:]))
    # Long healthy by now; checked after the nodes so that the wait above starts at once.
    remaining = max(1.0, min(ctx.settings.master_ready_timeout, deadline - time.monotonic()))
    for name in ("kube-controller-manager", "kube-scheduler"):
        wait_healthy(ctx, name, remaining, restarts_allowed=CRASH_LOOP_RESTARTS - 1)


def _diagnose(engine: NodeEngine, ctx: ClusterContext) -> str:
    try:
        return engine.diagnose(ctx)
    except KubemarkUpError as exc:
        return f"(could not tell why: {exc.message})"


def undo(ctx: ClusterContext) -> list[str]:
    return ctx.provider.node_engine(ctx).stop(ctx)


def plan(ctx: ClusterContext) -> list[str]:
    return ctx.provider.node_engine(ctx).plan(ctx) if ctx.settings.nodes > 0 else []


STEP = Step("nodes", "", run, undo=undo, undo_title="stop the hollow nodes", plan=plan)
