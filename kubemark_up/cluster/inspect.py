"""status, logs and locate: what a started cluster is doing, read from its state and
its hosts; nothing is changed. status and locate return typed records (the CLI
renders them as text, or dumps to_json() for --output json)."""

from __future__ import annotations

import posixpath
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kubemark_up import master, readiness
from kubemark_up.cluster.engine import context
from kubemark_up.cluster.supervision import components
from kubemark_up.errors import NotFoundError
from kubemark_up.providers.base import ClusterContext
from kubemark_up.state import ClusterDir
from kubemark_up.ui import UI


# The field order is the order of the keys in --output json.
@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int | None  # the component's own; its supervisor's below
    supervisor_pid: int | None
    restarts: int
    running: bool
    healthy: bool
    log: str | None


@dataclass(frozen=True)
class MasterStatus:
    healthy: bool
    components: list[ComponentStatus]


@dataclass(frozen=True)
class NodesStatus:
    total: int
    ready: int | None  # None: could not be counted (error says why)
    processes_running: int
    error: str | None


@dataclass(frozen=True)
class Status:
    name: str
    provider: str
    phase: str
    created_at: str
    endpoint: str | None
    master_host: str
    kubeconfig: str
    logs: str
    healthy: bool  # the master healthy and every hollow node Ready
    master: MasterStatus
    nodes: NodesStatus

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Location:
    """Where one hollow node really runs."""

    node: str
    provider: str
    where: str
    processes: list[dict[str, Any]]  # one per process or container, as the node engine tells

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def status(name: str, home: Path) -> Status:
    ctx = context(name, home)
    try:
        return _status(ctx)
    finally:
        ctx.provider.close()


def _status(ctx: ClusterContext) -> Status:
    state = ctx.state
    site = ctx.provider.master(ctx)
    rendered = components(ctx, site) if state.ports.keys() >= set(master.port_names(site.paths)) else {}
    names = master.order(site.paths)
    records = {n: r for n in names if (r := state.processes.get(n))}
    alive = site.host.alive(h for r in records.values() if (h := ctx.handle(r)))
    urls = [rendered[n].liveness_probe.url for n in names if n in rendered]
    probes = dict(zip([n for n in names if n in rendered],
                      site.host.probe_all(urls, timeout=2.0), strict=True))
    report_components: list[ComponentStatus] = []
    for comp_name in names:
        record = records.get(comp_name)
        handle = ctx.handle(record) if record else None
        supervision = site.host.supervision(handle, record.log) if handle and record else None
        running = bool(handle and alive.get(handle)) and (supervision is None or supervision.running)
        report_components.append(ComponentStatus(
            name=comp_name,
            pid=supervision.pid if supervision else (record.pid if record else None),
            supervisor_pid=record.pid if supervision and record else None,
            restarts=supervision.restarts if supervision else 0,
            running=running,
            healthy=bool(running and probes.get(comp_name)),
            log=record.log if record else None,
        ))
    engine = ctx.provider.node_engine(ctx)
    failed = engine.failed(ctx) if state.nodes else {}
    kubeconfig_path = ctx.dir.kubeconfig
    ready, error = readiness.count_ready(kubeconfig_path, state.nodes) if kubeconfig_path.exists() else (None, "no kubeconfig")
    master_healthy = all(c.healthy for c in report_components)
    return Status(
        name=ctx.info.name,
        provider=ctx.info.provider,
        phase=state.phase,
        created_at=ctx.info.created_at,
        endpoint=state.endpoint,
        master_host=site.host.name,
        kubeconfig=str(kubeconfig_path),
        logs=site.paths.log_dir,
        healthy=master_healthy and ready == len(state.nodes) and not failed,
        master=MasterStatus(healthy=master_healthy, components=report_components),
        nodes=NodesStatus(
            total=len(state.nodes),
            ready=ready,
            processes_running=len(state.nodes) - len(failed),
            error=error,
        ),
    )


def collect_logs(name: str, home: Path, out: Path, ui: UI) -> list[Path]:
    """Every master component's log and every hollow node's into out: from where they
    run while the cluster exists, else the logs a finished or failed run left here."""
    cdir = ClusterDir(home, name)
    out.mkdir(parents=True, exist_ok=True)
    if not cdir.exists():
        if not cdir.logs.is_dir():
            raise NotFoundError(f"no cluster named '{name}' in {home}, and no logs of one")
        written = []
        for path in sorted(cdir.logs.iterdir()):
            if path.is_file():
                written.append(Path(shutil.copy2(path, out / path.name)))
        return written
    ctx = context(name, home)
    try:
        site = ctx.provider.master(ctx)
        written = []
        with ui.step(f"fetch the master's logs from {site.host.name}"):
            for record in ctx.state.processes.values():
                if record.role != "master":
                    continue
                for path in (record.log, posixpath.join(posixpath.dirname(record.log),
                                                       f"{record.name}.supervise.json")):
                    target = out / posixpath.basename(path)
                    if site.host.get(path, target):
                        written.append(target)
        if ctx.state.nodes:
            engine = ctx.provider.node_engine(ctx)
            with ui.step(f"fetch the logs of {len(ctx.state.nodes)} hollow nodes"):
                written += engine.collect_logs(ctx, out)
        return written
    finally:
        ctx.provider.close()


def locate(name: str, home: Path, node: str) -> Location:
    ctx = context(name, home)
    try:
        state = ctx.state
        resolved = node if node in state.nodes else None
        if resolved is None and ctx.dir.kubeconfig.exists():
            resolved = readiness.node_by_address(ctx.dir.kubeconfig, node, state.nodes)
        if resolved is None:
            last = f" (nodes are hollow-node-0 ... hollow-node-{len(state.nodes) - 1})" if state.nodes else ""
            raise NotFoundError(f"no hollow node '{node}' in cluster '{name}'{last}")
        location = ctx.provider.node_engine(ctx).locate(ctx, resolved)
        return Location(node=location.node, provider=ctx.info.provider, where=location.where,
                        processes=location.details)
    finally:
        ctx.provider.close()

