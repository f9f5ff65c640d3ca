"""start, stop, status and locate: the same steps for every provider.

start is an ordered list of small steps. Each is recorded in state.json before it
acts and marked done after, and each is idempotent. stop is driven by state alone:
it undoes what state lists, in reverse, collecting every error rather than
stopping at the first, and it also finds any process carrying the cluster's marker.
"""

from __future__ import annotations

import contextlib
import ipaddress
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from kubemark_up import binaries as binaries_mod
from kubemark_up import kubeconfig, master, pki, readiness
from kubemark_up.config import Settings
from kubemark_up.context import Context
from kubemark_up.errors import ComponentError, ConfigError, KubemarkUpError, NotFoundError
from kubemark_up.hosts import Host, LocalHost
from kubemark_up.nodes.processes import ProcessNodes
from kubemark_up.providers import Provider, load
from kubemark_up.state import ClusterDir, ClusterState, ProcessRecord
from kubemark_up.ui import UI

LOG_TAIL_LINES = 15


# start ------------------------------------------------------------------------


def start(settings: Settings, home: Path, ui: UI) -> Context:
    """Bring up the cluster and wait until its hollow nodes are Ready. On any failure
    or interruption, stop what was started, then re-raise."""
    provider = load(settings.provider)
    cdir = ClusterDir(home, settings.name)
    with cdir.lock():
        return _start(settings, cdir, provider, ui)


def _start(settings: Settings, cdir: ClusterDir, provider: Provider, ui: UI) -> Context:
    _refuse_existing(cdir)
    ui.info(
        f"Starting kubemark cluster {settings.name} (provider {provider.name}, "
        f"{settings.nodes} hollow nodes, Kubernetes {settings.kubernetes_version})"
    )
    ctx = Context(
        dir=cdir,
        state=ClusterState(name=settings.name, provider=provider.name, settings=settings.model_dump(mode="json")),
        settings=settings,
        ui=ui,
    )
    provider.preflight(ctx)  # before anything exists: a refusal leaves nothing behind
    if archived := cdir.archive_logs():
        ui.info(f"  logs of the previous run moved to {archived}")
    ctx.dir.ensure()
    ctx.save()
    try:
        for step in STEPS:
            _run_step(ctx, provider, step)
        ctx.state.phase = "running"
        ctx.save()
    except BaseException:
        ctx.state.phase = "failed"
        ctx.save()
        ui.warn(f"start did not finish: stopping what it started (logs stay in {ctx.dir.logs})")
        with _shielded():  # a second Ctrl-C must not leave half of it running
            errors = _teardown(ctx, provider, purge=False)
        for error in errors:
            ui.warn(error)
        raise
    return ctx


@contextlib.contextmanager
def _shielded() -> Iterator[None]:
    """Ignore SIGINT and SIGTERM meanwhile (only the main thread may set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _refuse_existing(cdir: ClusterDir) -> None:
    if not cdir.exists():
        return
    try:
        phase = cdir.load().phase
    except KubemarkUpError:
        phase = "unknown"
    raise KubemarkUpError(
        f"a cluster named '{cdir.name}' already exists (phase: {phase}); "
        f"stop it first: kubemark-up stop --name {cdir.name}"
    )


StepFn = Callable[[Context, Provider], None]


@dataclass(frozen=True)
class Step:
    key: str  # its name in state.steps
    title: str  # its status line; "" for steps that show their own progress
    run: StepFn


def _run_step(ctx: Context, provider: Provider, step: Step) -> None:
    if ctx.state.steps.get(step.key) == "done":
        return
    ctx.state.steps[step.key] = "started"
    ctx.save()
    began = time.monotonic()
    if step.title:
        with ctx.ui.step(step.title):
            step.run(ctx, provider)
    else:
        step.run(ctx, provider)
    ctx.state.steps[step.key] = "done"
    ctx.state.timings[step.key] = round(time.monotonic() - began, 3)
    ctx.save()


def _step_binaries(ctx: Context, provider: Provider) -> None:
    if binaries_mod.cached(ctx.settings, ctx.dir.home):
        with ctx.ui.step("find Kubernetes binaries"):
            found = binaries_mod.resolve(ctx.settings, ctx.dir.home, ctx.ui)
    else:  # a download or build shows its own status lines
        found = binaries_mod.resolve(ctx.settings, ctx.dir.home, ctx.ui)
    ctx.state.binaries = {name: str(binary.path) for name, binary in found.items()}


def _step_ports(ctx: Context, provider: Provider) -> None:
    host = provider.master_host(ctx)
    wanted = [name for name in master.PORT_NAMES if name not in ctx.state.ports]
    fixed = {"apiserver": ctx.settings.apiserver_port} if ctx.settings.apiserver_port else {}
    low, high = ctx.settings.port_bounds
    with ctx.dir.lock_ports():  # picked and recorded before another cluster picks
        taken = set(fixed.values()) | set(ctx.state.ports.values()) | ctx.dir.claimed_ports()
        if fixed and fixed["apiserver"] in ctx.dir.claimed_ports():
            raise ConfigError(f"apiserver_port {fixed['apiserver']} belongs to another kubemark-up cluster")
        free = host.free_ports(len([n for n in wanted if n not in fixed]), low=low, high=high, exclude=taken)
        for name in wanted:
            ctx.state.ports[name] = fixed[name] if name in fixed else free.pop(0)
        address = provider.master_addresses(ctx)[0]
        ctx.state.endpoint = f"https://{address}:{ctx.state.ports['apiserver']}"
        ctx.save()


def _step_pki(ctx: Context, provider: Provider) -> None:
    authority = pki.PKI(ctx.dir.pki, ctx.settings.key_algorithm)
    pki.ensure_master_pki(
        authority,
        addresses=provider.master_addresses(ctx),
        service_ip=ctx.settings.first_service_ip,
        dns_domain=ctx.settings.dns_domain,
    )
    names = [f"hollow-node-{i}" for i in range(ctx.settings.nodes)]
    pki.ensure_node_pki(authority, names)
    server, ca = ctx.state.endpoint or "", ctx.dir.pki / "ca.crt"

    def write(path: Path, stem: str, user: str, embed: bool = False) -> None:
        kubeconfig.write(
            path,
            kubeconfig.build(
                server=server, ca_file=ca, cert_file=authority.cert_path(stem),
                key_file=authority.key_path(stem), user=user, embed=embed, cluster=ctx.state.name,
            ),
        )

    write(ctx.dir.kubeconfig, "admin", "kubernetes-admin", embed=True)
    write(ctx.dir.component_kubeconfig("controller-manager"), "controller-manager", "system:kube-controller-manager")
    write(ctx.dir.component_kubeconfig("scheduler"), "scheduler", "system:kube-scheduler")
    write(ctx.dir.component_kubeconfig("kube-proxy"), "kube-proxy", "system:kube-proxy")
    for name in names:
        write(ctx.dir.node_kubeconfig(name), f"nodes/{name}", f"system:node:{name}")


def _components(ctx: Context, provider: Provider) -> dict[str, master.Component]:
    rendered = master.render(
        ctx.settings,
        paths=provider.master_paths(ctx),
        ports=ctx.state.ports,
        advertise_address=_first_ip(provider.master_addresses(ctx)),
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


def _start_component(ctx: Context, provider: Provider, name: str) -> master.Component:
    """Record, then start one master component (unless it already runs)."""
    component = _components(ctx, provider)[name]
    host = provider.master_host(ctx)
    argv = [ctx.state.binaries[component.command[0]], *component.command[1:]]
    record = ctx.state.processes.get(name)
    if record is not None and (handle := ctx.handle(record)) and host.running(handle):
        return component
    manifests = ctx.dir.run / "manifests"
    manifests.mkdir(mode=0o700, parents=True, exist_ok=True)
    # The rendered static-pod manifest, for the user to read: what this process is.
    (manifests / f"{name}.yaml").write_text(yaml.safe_dump(component.manifest, sort_keys=False))
    record = ProcessRecord(name=name, role="master", argv=argv, log=str(ctx.dir.logs / f"{name}.log"))
    ctx.state.processes[name] = record
    ctx.save()
    # Supervised, as a kubelet keeps a static pod: restarted with crash-loop back-off.
    handle = host.spawn(argv, log=Path(record.log), env={}, marker=ctx.dir.marker, restart=True)
    record.pid, record.create_time = handle.pid, handle.create_time
    ctx.save()
    return component


def _crashed(ctx: Context, host: Host, name: str) -> str | None:
    """Why a master component is not running as started, or None if it is. A restart
    during start-up is a failure: start would otherwise wait out a crash loop."""
    record = ctx.state.processes.get(name)
    handle = ctx.handle(record) if record else None
    if handle is None or not host.running(handle):
        return "is not running"
    supervision = host.supervision(handle, Path(record.log))
    if supervision is not None and supervision.restarts:
        return f"exited with code {supervision.last_exit_code}"
    return None


def _wait_healthy(ctx: Context, provider: Provider, component: master.Component, timeout: float) -> None:
    host = provider.master_host(ctx)
    record = ctx.state.processes[component.name]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if why := _crashed(ctx, host, component.name):
            raise ComponentError(
                f"{component.name} {why} during start-up (log: {record.log})",
                detail=host.tail(Path(record.log), LOG_TAIL_LINES),
            )
        if master.probe_ok(component.startup_probe):
            return
        time.sleep(0.25)
    raise ComponentError(
        f"{component.name} was not ready at {component.startup_probe.url} after {timeout:.0f}s (log: {record.log})",
        detail=host.tail(Path(record.log), LOG_TAIL_LINES),
    )


def _component_step(name: str) -> StepFn:
    def step(ctx: Context, provider: Provider) -> None:
        component = _start_component(ctx, provider, name)
        _wait_healthy(ctx, provider, component, ctx.settings.master_ready_timeout)

    return step


def _step_controllers(ctx: Context, provider: Provider) -> None:
    # Started only once the apiserver is ready: the controller-manager exits at once if
    # RBAC bootstrap has not finished. Their health is checked alongside the nodes'.
    for name in ("kube-controller-manager", "kube-scheduler"):
        _start_component(ctx, provider, name)


def _step_nodes(ctx: Context, provider: Provider) -> None:
    names = [f"hollow-node-{i}" for i in range(ctx.settings.nodes)]
    provider.node_engine(ctx).start(ctx, names)


def _step_wait_ready(ctx: Context, provider: Provider) -> None:
    engine = provider.node_engine(ctx)
    components = _components(ctx, provider)
    host = provider.master_host(ctx)

    def check() -> None:
        """Fail fast: a master component that died, or more dead hollow nodes than allowed."""
        for name in master.ORDER:
            if why := _crashed(ctx, host, name):
                log = ctx.state.processes[name].log
                raise ComponentError(f"{name} {why} (log: {log})", detail=host.tail(Path(log), LOG_TAIL_LINES))
        failed = engine.failed(ctx)
        if len(failed) > ctx.settings.allowed_not_ready:
            node, failure = next(iter(failed.items()))
            raise ComponentError(
                f"{len(failed)} hollow node(s) failed; {node}: {failure.why} (log: {failure.log})",
                detail=host.tail(Path(failure.log), LOG_TAIL_LINES),
            )

    readiness.wait_for_nodes(
        ctx.dir.kubeconfig,
        names=ctx.state.nodes,
        need=max(0, len(ctx.state.nodes) - ctx.settings.allowed_not_ready),
        timeout=ctx.settings.nodes_ready_timeout,
        ui=ctx.ui,
        check=check,
    )
    # Long healthy by now; checked after the nodes so the wait above starts at once.
    for name in ("kube-controller-manager", "kube-scheduler"):
        _wait_healthy(ctx, provider, components[name], ctx.settings.master_ready_timeout)


STEPS = [
    Step("binaries", "", _step_binaries),  # shows download or build progress itself
    Step("ports", "pick ports", _step_ports),
    Step("pki", "write certificates and kubeconfigs", _step_pki),
    Step("etcd", "start etcd", _component_step("etcd")),
    Step("kube-apiserver", "start kube-apiserver and wait for /readyz", _component_step("kube-apiserver")),
    Step("controllers", "start kube-controller-manager and kube-scheduler", _step_controllers),
    Step("nodes", "start hollow nodes", _step_nodes),
    Step("ready", "", _step_wait_ready),  # shows a progress bar itself
]


# stop -------------------------------------------------------------------------

# The master stops in reverse start order, one wave at a time: the apiserver keeps
# retrying a dead etcd for 30 s after SIGTERM, so etcd goes last.
STOP_WAVES = (("kube-scheduler", "kube-controller-manager"), ("kube-apiserver",), ("etcd",))


def stop(name: str, home: Path, ui: UI, *, purge: bool = False, provider_name: str | None = None) -> list[str]:
    """Stop everything state lists, plus any process with the cluster's marker; remove
    runtime files (and logs with purge). Idempotent. Returns what was stopped, as lines."""
    cdir = ClusterDir(home, name)
    with cdir.lock():
        return _stop(cdir, ui, purge=purge, provider_name=provider_name)


def _stop(cdir: ClusterDir, ui: UI, *, purge: bool, provider_name: str | None) -> list[str]:
    name = cdir.name
    state, settings = None, None
    if cdir.exists():
        try:
            state = cdir.load()
            settings = Settings.model_validate(state.settings)
        except (KubemarkUpError, ValidationError) as exc:
            # Damaged, or written by another version: what runs is still found by its
            # marker. The files stay for a look, unless purge.
            reason = exc.message if isinstance(exc, KubemarkUpError) else "its settings are not this version's"
            ui.warn(f"cannot use {cdir.state_file} ({reason}); stopping the cluster's processes by their marker")
            state = None
    if state is None or settings is None:
        # Markers are found on this machine only, so its engine does the hollow nodes
        # (frozen first, their /tmp files found and removed), then the rest goes.
        host = LocalHost()
        leftovers = host.find_marked(cdir.marker)
        bare = Context(dir=cdir, state=ClusterState(name=name, provider="?", settings={}), settings=Settings(), ui=ui)
        errors = ProcessNodes(host).stop(bare)
        if errors or host.stop(host.find_marked(cdir.marker), timeout=10):
            raise KubemarkUpError(f"processes of cluster '{name}' would not stop", detail="\n".join(errors))
        if purge and cdir.root.exists():
            cdir.remove_runtime(purge=True)
        return [f"stopped {len(leftovers)} stray process(es)"] if leftovers else []
    if provider_name and provider_name != state.provider:
        raise KubemarkUpError(
            f"cluster '{name}' was started by provider '{state.provider}', not '{provider_name}'"
        )
    provider = load(state.provider)
    ctx = Context(dir=cdir, state=state, settings=settings, ui=ui)
    ctx.state.phase = "stopping"
    ctx.save()
    errors = _teardown(ctx, provider, purge=purge)
    if errors:
        raise KubemarkUpError(
            f"stop left {len(errors)} problem(s); state kept, run stop again", detail="\n".join(errors)
        )
    return [f"stopped {len(state.processes)} process(es)"]


def _teardown(ctx: Context, provider: Provider, *, purge: bool) -> list[str]:
    errors: list[str] = []
    host = provider.master_host(ctx)
    with ctx.ui.step(f"stop {len(ctx.state.nodes)} hollow node(s)"):
        errors += provider.node_engine(ctx).stop(ctx)
    with ctx.ui.step("stop the master"):
        for wave in STOP_WAVES:
            handles = {}
            for name in wave:
                record = ctx.state.processes.get(name)
                if record and (handle := ctx.handle(record)):
                    handles[handle] = name
            for left in host.stop(list(handles), timeout=ctx.settings.stop_timeout):
                errors.append(f"{handles[left]} (pid {left.pid}) would not stop")
        strays = host.find_marked(ctx.dir.marker)
        for left in host.stop(strays, timeout=ctx.settings.stop_timeout):
            errors.append(f"process {left.pid} of this cluster would not stop")
    busy = [f"{name} port {port}" for name, port in ctx.state.ports.items() if host.port_in_use(port)]
    if busy and not errors:
        # Ports are freed as soon as their processes are gone; if one is still held it
        # is by someone else now, so it is reported, not fought over.
        ctx.ui.warn(f"ports still in use by other processes: {', '.join(busy[:5])}")
    if not errors:
        with ctx.ui.step("remove runtime files" + (" and logs" if purge else " (logs kept)")):
            ctx.dir.remove_runtime(purge=purge)
    return errors


# status and locate -------------------------------------------------------------


def status(name: str, home: Path) -> dict:
    cdir = ClusterDir(home, name)
    state = cdir.load()
    provider = load(state.provider)
    settings = Settings.model_validate(state.settings)
    ctx = Context(dir=cdir, state=state, settings=settings, ui=UI())
    host = provider.master_host(ctx)
    components = _components(ctx, provider) if state.ports.keys() >= set(master.PORT_NAMES) else {}
    report_components = []
    for comp_name in master.ORDER:
        record = state.processes.get(comp_name)
        handle = ctx.handle(record) if record else None
        supervision = host.supervision(handle, Path(record.log)) if handle and record else None
        running = bool(handle and host.running(handle)) and (supervision is None or supervision.running)
        component = components.get(comp_name)
        healthy = bool(running and component and master.probe_ok(component.liveness_probe))
        report_components.append(
            {
                "name": comp_name,
                "pid": supervision.pid if supervision else (record.pid if record else None),
                "supervisor_pid": record.pid if supervision and record else None,
                "restarts": supervision.restarts if supervision else 0,
                "running": running,
                "healthy": healthy,
                "log": record.log if record else None,
            }
        )
    engine = provider.node_engine(ctx)
    failed = engine.failed(ctx) if state.nodes else {}
    ready, error = readiness.count_ready(cdir.kubeconfig, state.nodes) if cdir.kubeconfig.exists() else (None, "no kubeconfig")
    return {
        "name": state.name,
        "provider": state.provider,
        "phase": state.phase,
        "created_at": state.created_at,
        "endpoint": state.endpoint,
        "kubeconfig": str(cdir.kubeconfig),
        "logs": str(cdir.logs),
        "master": {
            "healthy": all(c["healthy"] for c in report_components),
            "components": report_components,
        },
        "nodes": {
            "total": len(state.nodes),
            "ready": ready,
            "processes_running": len(state.nodes) - len(failed),
            "error": error,
        },
    }


def locate(name: str, home: Path, node: str) -> dict:
    cdir = ClusterDir(home, name)
    state = cdir.load()
    provider = load(state.provider)
    settings = Settings.model_validate(state.settings)
    ctx = Context(dir=cdir, state=state, settings=settings, ui=UI())
    resolved = node if node in state.nodes else None
    if resolved is None and cdir.kubeconfig.exists():
        resolved = readiness.node_by_address(cdir.kubeconfig, node, state.nodes)
    if resolved is None:
        raise NotFoundError(f"no hollow node '{node}' in cluster '{name}' (nodes are hollow-node-0 ... hollow-node-{len(state.nodes) - 1})")
    location = provider.node_engine(ctx).locate(ctx, resolved)
    return {"node": location.node, "provider": state.provider, "where": location.where, "processes": location.details}
