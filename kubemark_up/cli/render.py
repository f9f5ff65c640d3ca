"""How the cluster's records read on the terminal: what start brought up, status,
and where a hollow node runs; and the same records for --output json."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

from kubemark_up.cli.app import out

if TYPE_CHECKING:
    from kubemark_up.cluster.inspect import Location, Status
    from kubemark_up.config import Settings
    from kubemark_up.providers.base import ClusterContext


def print_json(document: dict[str, Any]) -> None:
    # Plain print: rich would wrap or style what a program reads.
    print(json.dumps(document, indent=1))


def print_started(ctx: ClusterContext, settings: Settings) -> None:
    total = sum(ctx.state.timings.values())
    name, count = ctx.info.name, len(ctx.state.nodes)
    if not count:
        summary = "a master-only cluster (no hollow nodes)"
    elif ctx.state.nodes_ready is not None and ctx.state.nodes_ready < count:
        summary = f"{ctx.state.nodes_ready} of {count} hollow nodes Ready (allowed_not_ready {settings.allowed_not_ready})"
    else:
        summary = f"{count} hollow nodes Ready"
    out.print(
        f"kubemark cluster '{name}' is up: {summary}, {total:.1f}s after start\n"
        f"  API endpoint: {ctx.state.endpoint}\n"
        f"  kubeconfig:   {ctx.dir.kubeconfig}\n"
        f"  try:          kubectl --kubeconfig {ctx.dir.kubeconfig} get nodes\n"
        f"  stop with:    kubemark-up stop --name {name}"
    )


def print_status(report: Status) -> None:
    out.print(
        Text(f"cluster {report.name} ({report.provider}, {report.phase}), master "),
        _yes(report.master.healthy, "healthy", "unhealthy"),
        sep="",
    )
    out.print(
        f"  endpoint:   {report.endpoint}\n  kubeconfig: {report.kubeconfig}\n"
        f"  logs:       {report.logs} on {report.master_host}"
    )
    table = Table("component", "pid", "running", "healthy", "restarts", box=None, pad_edge=False)
    for component in report.master.components:
        table.add_row(
            component.name, str(component.pid or "-"), _yes(component.running),
            _yes(component.healthy), str(component.restarts),
        )
    out.print(table)
    nodes = report.nodes
    ready = "unknown" if nodes.ready is None else str(nodes.ready)
    out.print(
        f"hollow nodes: {ready}/{nodes.total} Ready, {nodes.processes_running}/{nodes.total} running"
        + (f" ({nodes.error})" if nodes.error else "")
    )


def print_location(where: Location) -> None:
    out.print(f"{where.node}: {where.where}")
    for part in where.processes:
        if "process" in part:
            state = "running" if part["running"] else "not running"
            out.print(f"  {part['process']:<8} pid {part['pid']}  {state}  log {part['log']}")
        else:
            out.print(f"  {part['container']:<30} {part['state']:<10} restarts {part['restarts']}  {part['logs']}")


def _yes(value: bool, yes: str = "yes", no: str = "no") -> Text:
    return Text(yes, style="green") if value else Text(no, style="red")
