"""The master's processes: rendered from the settings, started supervised through the
start script, watched for crash loops while start goes on, and stopped."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable

from kubemark_up import master
from kubemark_up.errors import ComponentError, KubemarkUpError
from kubemark_up.providers import MasterSite
from kubemark_up.providers.base import ClusterContext
from kubemark_up.state import ProcessRecord

LOG_TAIL_LINES = 15
# A master component that restarts this often while the nodes come up is crash-looping;
# fewer restarts its supervisor repairs, and start goes on.
CRASH_LOOP_RESTARTS = 3


def components(ctx: ClusterContext, site: MasterSite | None = None) -> dict[str, master.Component]:
    site = site or ctx.provider.master(ctx)
    rendered = master.render(
        ctx.settings, paths=site.paths, ports=ctx.state.ports,
        advertise_address=_first_ip(site.addresses), bind_address=site.bind_address,
    )
    return {component.name: component for component in rendered}


def _first_ip(addresses: list[str]) -> str:
    """--advertise-address takes an IP; the first of the master's addresses that is one."""
    for address in addresses:
        try:
            return str(ipaddress.ip_address(address))
        except ValueError:
            continue
    raise KubemarkUpError(f"the master has no IP address among {addresses}")


def start_component(ctx: ClusterContext, name: str) -> None:
    """Record, then start, one master component through the start script, supervised."""
    site = ctx.provider.master(ctx)
    record = ProcessRecord(
        name=name, role="master", argv=["/bin/sh", site.paths.start_script, name], log=site.paths.log(name)
    )
    ctx.state.processes[name] = record
    ctx.save()
    # Supervised, as a kubelet keeps a static pod: restarted with crash-loop back-off.
    handle = site.host.spawn(record.argv, log=record.log, env={}, marker=ctx.marker, restart=True)
    record.pid, record.start = handle.pid, handle.start
    ctx.save()


def _trouble(ctx: ClusterContext, site: MasterSite, name: str, *, restarts_allowed: int) -> str | None:
    """Why a master component is not running as it should, or None if it is."""
    record = ctx.state.processes.get(name)
    handle = ctx.handle(record) if record else None
    if record is None or handle is None or not site.host.running(handle):
        return "is not running"
    supervision = site.host.supervision(handle, record.log)
    if supervision is None or supervision.restarts <= restarts_allowed:
        return None
    if not restarts_allowed:
        return f"exited with code {supervision.last_exit_code}"
    return f"is crash-looping (restarted {supervision.restarts} times, last exit code {supervision.last_exit_code})"


def _ready_url(ctx: ClusterContext, site: MasterSite, component: master.Component) -> tuple[str, bool]:
    """Where to probe a component's readiness, and whether from here. The apiserver is
    asked through the address the nodes and users will use; the others on their host."""
    if component.name == "kube-apiserver":
        return f"{ctx.state.endpoint}{component.startup_probe.path}", True
    return component.startup_probe.url, False


def wait_healthy(ctx: ClusterContext, name: str, timeout: float, *, restarts_allowed: int = 0) -> None:
    """Wait for a component's startup probe. At its start-up any exit fails at once
    (a bad flag shows in a second, not after a crash loop); later, restarts_allowed."""
    site = ctx.provider.master(ctx)
    component = components(ctx, site)[name]
    record = ctx.state.processes[name]
    url, from_here = _ready_url(ctx, site, component)
    when = " during start-up" if not restarts_allowed else ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if why := _trouble(ctx, site, name, restarts_allowed=restarts_allowed):
            raise ComponentError(
                f"{name} {why}{when} (log: {record.log} on {site.host.name})",
                detail=site.host.tail(record.log, LOG_TAIL_LINES),
            )
        if master.probe_ok(url) if from_here else site.host.probe(url):
            return
        time.sleep(0.25)
    raise ComponentError(
        f"{name} was not ready at {url} after {timeout:.0f}s (log: {record.log} on {site.host.name})",
        detail=site.host.tail(record.log, LOG_TAIL_LINES),
    )


def start_and_wait(ctx: ClusterContext, name: str) -> None:
    start_component(ctx, name)
    wait_healthy(ctx, name, ctx.settings.master_ready_timeout)


def check_master(ctx: ClusterContext, site: MasterSite, warned: set[str]) -> None:
    """Fail on a master component that is gone or crash-looping; one that restarted
    and came back is its supervisor's repair, said once and forgiven."""
    for name in master.order(site.paths):
        record = ctx.state.processes[name]
        if why := _trouble(ctx, site, name, restarts_allowed=CRASH_LOOP_RESTARTS - 1):
            raise ComponentError(f"{name} {why} (log: {record.log} on {site.host.name})",
                                 detail=site.host.tail(record.log, LOG_TAIL_LINES))
        handle = ctx.handle(record)
        supervision = site.host.supervision(handle, record.log) if handle else None
        if supervision and supervision.restarts and name not in warned:
            warned.add(name)
            ctx.ui.warn(f"{name} exited with code {supervision.last_exit_code} and its supervisor restarted it")


def stop_components(*names: str, sweep: bool = False) -> Callable[[ClusterContext], list[str]]:
    """The undo of a step that started these master components."""

    def undo(ctx: ClusterContext) -> list[str]:
        site = ctx.provider.master(ctx)
        handles = {}
        for name in names:
            record = ctx.state.processes.get(name)
            if record and (handle := ctx.handle(record)):
                handles[handle] = name
        errors = [f"{handles[h]} (pid {h.pid}) would not stop" for h in
                  site.host.stop(list(handles), timeout=ctx.settings.stop_timeout)]
        if sweep:  # the last master process: anything of this cluster still running there
            strays = site.host.find_marked(ctx.marker)
            errors += [f"process {h.pid} of this cluster would not stop" for h in
                       site.host.stop(strays, timeout=ctx.settings.stop_timeout)]
        return errors

    return undo
