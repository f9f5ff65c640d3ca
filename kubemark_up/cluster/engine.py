"""start, stop, status, logs and locate: the same steps for every provider.

start is an ordered list of small steps (steps.py): the shared ones below, with the
provider's own put among them. Each is recorded in state.json before it acts and
marked done after; a failed or interrupted start undoes what it recorded. stop is
driven by state alone: it walks the recorded steps backwards and runs each one's
undo, collecting every problem rather than stopping at the first. A second start
over a cluster that exists is refused: stop it first.
"""

from __future__ import annotations

import contextlib
import ipaddress
import posixpath
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

import yaml
from pydantic import ValidationError

from kubemark_up import binaries as binaries_mod
from kubemark_up import kubeconfig, master, pki, readiness, staging, supervise
from kubemark_up.config import Settings
from kubemark_up.context import Context
from kubemark_up.errors import ComponentError, ConfigError, KubemarkUpError, NotFoundError
from kubemark_up.nodes import NodeEngine
from kubemark_up.providers import MasterSite, Provider, load
from kubemark_up.state import ClusterDir, ClusterInfo, ClusterState, MasterRecord, ProcessRecord
from kubemark_up.steps import Step
from kubemark_up.ui import UI

LOG_TAIL_LINES = 15
# A master component that restarts this often while the nodes come up is crash-looping;
# fewer restarts its supervisor repairs, and start goes on.
CRASH_LOOP_RESTARTS = 3


def node_names(settings: Settings) -> list[str]:
    return [f"hollow-node-{i}" for i in range(settings.nodes)]


# start ------------------------------------------------------------------------


def start(settings: Settings, home: Path, ui: UI) -> Context:
    """Bring up the cluster and wait until its hollow nodes are Ready. On any failure
    or interruption, stop what was started, then re-raise."""
    provider = load(settings)
    cdir = ClusterDir(home, settings.name)
    try:
        with cdir.lock():
            return _start(settings, cdir, provider, ui)
    finally:
        provider.close()


def _start(settings: Settings, cdir: ClusterDir, provider: Provider, ui: UI) -> Context:
    _refuse_existing(cdir)
    info = ClusterInfo(name=settings.name, provider=provider.name, settings=settings.model_dump(mode="json"))
    ctx = Context(dir=cdir, info=info, state=ClusterState(), settings=settings, ui=ui, provider=provider)
    nodes = f"{settings.nodes} hollow nodes" if settings.nodes else "no hollow nodes: a master-only cluster"
    ui.info(
        f"Starting kubemark cluster {settings.name} (provider {provider.name}, {nodes}, "
        f"Kubernetes {settings.kubernetes_version})"
    )
    provider.preflight(ctx)  # before anything exists: a refusal leaves nothing behind
    if archived := cdir.archive_logs():
        ui.info(f"  logs of the previous run moved to {archived}")
    cdir.ensure()
    cdir.save_info(info)
    ctx.save()
    steps = provider.steps(shared_steps())
    try:
        for step in steps:
            _run_step(ctx, step)
        ctx.state.phase = "running"
        ctx.save()
    except BaseException:
        ctx.state.phase = "failed"
        ctx.save()
        ui.warn(f"start did not finish: stopping what it started (logs stay in {ctx.dir.logs})")
        with shielded():  # a second Ctrl-C must not leave half of it running
            errors = _teardown(ctx, steps, purge=False)
        for error in errors:
            ui.warn(error)
        if errors:
            ui.warn(f"state kept in {cdir.state_file}: run `kubemark-up stop --name {cdir.name}` once it can be reached")
        raise
    return ctx


@contextlib.contextmanager
def shielded() -> Iterator[None]:
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


def plan(settings: Settings, home: Path, ui: UI) -> list[str]:
    """--dry-run: what start would make, from the provider; nothing is made or written."""
    provider = load(settings)
    info = ClusterInfo(name=settings.name, provider=provider.name, settings=settings.model_dump(mode="json"))
    ctx = Context(dir=ClusterDir(home, settings.name), info=info, state=ClusterState(), settings=settings, ui=ui,
                  provider=provider)
    try:
        return provider.plan(ctx, provider.steps(shared_steps()))
    finally:
        provider.close()


def gc(settings: Settings, home: Path, ui: UI, *, delete: bool) -> list[str]:
    """Resources the provider marked for clusters that have no state in home: listed,
    and with delete, deleted. For providers that make cloud resources (orphans())."""
    provider = load(settings)
    orphans = getattr(provider, "orphans", None)
    if orphans is None:
        raise ConfigError(f"provider {provider.name} makes no cloud resources: nothing to collect")
    known = set()  # a name with state here is never collected (whatever its project)
    for path in home.glob("*/cluster.json"):
        try:
            if ClusterDir(home, path.parent.name).load_info().provider == provider.name:
                known.add(path.parent.name)
        except KubemarkUpError:
            known.add(path.parent.name)
    try:
        found = orphans(known)
        lines = []
        for cluster_name, key, resource, scope in found:
            line = f"{key} {resource} ({scope.path}) of cluster {cluster_name}"
            if delete:
                with ui.step(f"delete {line}", long=True):
                    provider.delete_orphan(cluster_name, key, resource, scope)  # type: ignore[attr-defined]
                line = "deleted " + line
            lines.append(line)
        return lines
    finally:
        provider.close()


def _refuse_existing(cdir: ClusterDir) -> None:
    if not cdir.exists():
        return
    phase: str
    try:
        phase = cdir.load().phase
    except KubemarkUpError:
        phase = "unknown"
    raise KubemarkUpError(
        f"a cluster named '{cdir.name}' already exists (phase: {phase}); "
        f"stop it first: kubemark-up stop --name {cdir.name}"
    )


def _run_step(ctx: Context, step: Step) -> None:
    ctx.state.steps[step.key] = "started"
    ctx.save()
    began = time.monotonic()
    if step.title:
        with ctx.ui.step(step.title):
            step.run(ctx)
    else:
        step.run(ctx)
    ctx.state.steps[step.key] = "done"
    ctx.state.timings[step.key] = round(time.monotonic() - began, 3)
    ctx.save()


# The shared steps ----------------------------------------------------------------


def _step_binaries(ctx: Context) -> None:
    if binaries_mod.cached(ctx.settings, ctx.dir.home):
        with ctx.ui.step("find Kubernetes binaries"):
            found = binaries_mod.resolve(ctx.settings, ctx.dir.home, ctx.ui)
    else:  # a download or build shows its own status lines
        found = binaries_mod.resolve(ctx.settings, ctx.dir.home, ctx.ui)
    ctx.state.binaries = {name: str(binary.path) for name, binary in found.items()}


def _step_ports(ctx: Context) -> None:
    site = ctx.provider.master(ctx)
    wanted = [name for name in master.port_names(site.paths) if name not in ctx.state.ports]
    fixed = ctx.provider.fixed_ports(ctx)
    low, high = ctx.settings.port_bounds
    with ctx.dir.lock_ports():  # picked and recorded before another cluster picks
        claimed = ctx.dir.claimed_ports()
        taken = set(fixed.values()) | set(ctx.state.ports.values()) | claimed
        # A port the provider fixes (gce: 443 on a VM of its own) is not another cluster's.
        if fixed and ctx.settings.apiserver_port and fixed["apiserver"] in claimed:
            raise ConfigError(f"apiserver_port {fixed['apiserver']} belongs to another kubemark-up cluster")
        standard = [n for n in wanted if n in fixed and n != "apiserver"]
        busy = [n for n, used in zip(standard, site.host.ports_in_use([fixed[n] for n in standard]),
                                     strict=True) if used]
        if busy:
            raise ConfigError(
                f"port(s) {', '.join(str(fixed[n]) for n in busy)} ({', '.join(busy)}) already in use on "
                f"{site.host.name}: clusterloader2's fixed metrics ports (another cluster there?); "
                "standard_metrics_ports: false picks free ones"
            )
        free = site.host.free_ports(len([n for n in wanted if n not in fixed]), low=low, high=high, exclude=taken)
        for name in wanted:
            ctx.state.ports[name] = fixed[name] if name in fixed else free.pop(0)
        ctx.state.endpoint = f"https://{_url_host(site.addresses[0])}:{ctx.state.ports['apiserver']}"
        ctx.state.master = MasterRecord(
            host=site.host.name, addresses=site.addresses, bind_address=site.bind_address,
            paths={k: v for k, v in asdict(site.paths).items() if v is not None},
        )
        ctx.save()


def _url_host(address: str) -> str:
    try:
        return f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
    except ValueError:
        return address


def _step_pki(ctx: Context) -> None:
    site = ctx.provider.master(ctx)
    authority = pki.PKI(ctx.dir.pki, ctx.settings.key_algorithm)
    pki.ensure_master_pki(
        authority, addresses=site.addresses, service_ip=ctx.settings.first_service_ip,
        dns_domain=ctx.settings.dns_domain,
    )
    names = node_names(ctx.settings)
    pki.ensure_node_pki(authority, names)
    server = ctx.state.endpoint or ""
    # The admin's carries its certificates; the others name files where they are read.
    kubeconfig.write(ctx.dir.kubeconfig, kubeconfig.embedded(
        server=server, ca=authority.cert_path("ca"), cert=authority.cert_path("admin"),
        key=authority.key_path("admin"), user="kubernetes-admin", cluster=ctx.info.name,
    ))
    there = site.paths.pki_dir

    def write(path: Path, stem: str, user: str) -> None:
        kubeconfig.write(path, kubeconfig.by_path(
            server=server, ca=f"{there}/ca.crt", cert=f"{there}/{stem}.crt", key=f"{there}/{stem}.key",
            user=user, cluster=ctx.info.name,
        ))

    write(ctx.dir.component_kubeconfig("controller-manager"), "controller-manager", "system:kube-controller-manager")
    write(ctx.dir.component_kubeconfig("scheduler"), "scheduler", "system:kube-scheduler")
    write(ctx.dir.component_kubeconfig("kube-proxy"), "kube-proxy", "system:kube-proxy")
    for name in names:
        write(ctx.dir.node_kubeconfig(name), f"nodes/{name}", f"system:node:{name}")


def _components(ctx: Context, site: MasterSite | None = None) -> dict[str, master.Component]:
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


def _master_identity(relative: Path) -> bool:
    """What of pki/ the master reads: all but the hollow nodes' identities."""
    parts = relative.parts
    return parts[0] != "nodes" and parts[:2] != ("kubeconfigs", "nodes") and parts != ("kubeconfigs", "kube-proxy.kubeconfig")


def _step_stage(ctx: Context) -> None:
    """The master's binaries, PKI, manifests, start script and supervisor on its host."""
    site = ctx.provider.master(ctx)
    host, paths = site.host, site.paths
    components = _components(ctx, site)
    with ctx.ui.step(f"put the master's files on {host.name}", long=not host.is_this_machine):
        host.mkdirs([paths.data_dir, paths.manifests_dir, paths.log_dir, paths.bin_dir, paths.pki_dir])
        if not host.is_this_machine:
            host.put(host.supervisor, Path(supervise.__file__).read_bytes(), mode=0o644)
        staging.put_tree(host, ctx.dir.pki, paths.pki_dir, include=_master_identity)
        for component in components.values():
            manifest = yaml.safe_dump(component.manifest, sort_keys=False).encode()
            # The rendered static-pod manifest, for the user to read: what this process is.
            host.put(posixpath.join(paths.manifests_dir, f"{component.name}.yaml"), manifest, mode=0o600)
        if ctx.settings.audit_nodes:
            host.put(posixpath.join(paths.data_dir, "audit-policy.yaml"), master.audit_policy(ctx.settings).encode(),
                     mode=0o600)
        script = master.start_script(list(components.values()), paths, cluster=ctx.info.name)
        host.put(paths.start_script, script.encode(), mode=0o700)
    wanted = {name: Path(ctx.state.binaries[name]) for name in master.ORDER}
    if host.is_this_machine:
        staging.put_binaries(host, wanted, paths.bin_dir, upload=site.upload_binaries)
        return
    verb = "put" if site.upload_binaries else "check"
    with ctx.ui.step(f"{verb} the master's binaries in {paths.bin_dir} on {host.name}", long=True):
        staging.put_binaries(host, wanted, paths.bin_dir, upload=site.upload_binaries)


def _start_component(ctx: Context, name: str) -> None:
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


def _trouble(ctx: Context, site: MasterSite, name: str, *, restarts_allowed: int) -> str | None:
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


def _ready_url(ctx: Context, site: MasterSite, component: master.Component) -> tuple[str, bool]:
    """Where to probe a component's readiness, and whether from here. The apiserver is
    asked through the address the nodes and users will use; the others on their host."""
    if component.name == "kube-apiserver":
        return f"{ctx.state.endpoint}{component.startup_probe.path}", True
    return component.startup_probe.url, False


def _wait_healthy(ctx: Context, name: str, timeout: float, *, restarts_allowed: int = 0) -> None:
    """Wait for a component's startup probe. At its start-up any exit fails at once
    (a bad flag shows in a second, not after a crash loop); later, restarts_allowed."""
    site = ctx.provider.master(ctx)
    component = _components(ctx, site)[name]
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


def _component_step(name: str) -> Callable[[Context], None]:
    def run(ctx: Context) -> None:
        _start_component(ctx, name)
        _wait_healthy(ctx, name, ctx.settings.master_ready_timeout)

    return run


def _step_etcd(ctx: Context) -> None:
    _component_step("etcd")(ctx)
    if master.EVENTS in master.order(ctx.provider.master(ctx).paths):
        _component_step(master.EVENTS)(ctx)


def _step_controllers(ctx: Context) -> None:
    # Started only once the apiserver is ready: the controller-manager exits at once if
    # RBAC bootstrap has not finished. Their health is checked alongside the nodes'.
    for name in ("kube-controller-manager", "kube-scheduler"):
        _start_component(ctx, name)


def _step_nodes(ctx: Context) -> None:
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
            _check_master(ctx, site, warned)
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
    # Long healthy by now; checked after the nodes so that the wait above starts at once.
    remaining = max(1.0, min(ctx.settings.master_ready_timeout, deadline - time.monotonic()))
    for name in ("kube-controller-manager", "kube-scheduler"):
        _wait_healthy(ctx, name, remaining, restarts_allowed=CRASH_LOOP_RESTARTS - 1)


def _diagnose(engine: NodeEngine, ctx: Context) -> str:
    try:
        return engine.diagnose(ctx)
    except KubemarkUpError as exc:
        return f"(could not tell why: {exc.message})"


def _check_master(ctx: Context, site: MasterSite, warned: set[str]) -> None:
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


# The undo of the shared steps -------------------------------------------------------


def _stop_components(*names: str, sweep: bool = False) -> Callable[[Context], list[str]]:
    def undo(ctx: Context) -> list[str]:
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


def _stop_nodes(ctx: Context) -> list[str]:
    return ctx.provider.node_engine(ctx).stop(ctx)


def shared_steps() -> list[Step]:
    """The steps of start every provider shares, in order. Providers add theirs among
    them by key: before "pki" for what goes into the serving certificate (an address),
    before "stage" for the host itself."""
    # The master stops in reverse start order: the apiserver keeps retrying a dead etcd
    # for 30 s after SIGTERM, so etcd goes last.
    return [
        Step("binaries", "", _step_binaries),  # shows download or build progress itself
        Step("ports", "pick ports", _step_ports),
        Step("pki", "write certificates and kubeconfigs", _step_pki),
        Step("stage", "", _step_stage),
        Step("etcd", "start etcd", _step_etcd,
             undo=_stop_components(master.EVENTS, "etcd", sweep=True), undo_title="stop etcd"),
        Step("kube-apiserver", "start kube-apiserver and wait for /readyz", _component_step("kube-apiserver"),
             undo=_stop_components("kube-apiserver"), undo_title="stop kube-apiserver"),
        Step("controllers", "start kube-controller-manager and kube-scheduler", _step_controllers,
             undo=_stop_components("kube-controller-manager", "kube-scheduler"),
             undo_title="stop kube-controller-manager and kube-scheduler"),
        Step("nodes", "", _step_nodes, undo=_stop_nodes, undo_title="stop the hollow nodes"),
    ]


# stop -------------------------------------------------------------------------


def stop(
    name: str, home: Path, ui: UI, *, purge: bool = False, provider_name: str | None = None,
    fetch_logs: bool = True,
) -> list[str]:
    """Undo everything state records, plus any process with the cluster's marker;
    remove runtime files (and logs with purge). Idempotent. Returns what was done."""
    cdir = ClusterDir(home, name)
    with cdir.lock():
        return _stop(cdir, ui, purge=purge, provider_name=provider_name, fetch_logs=fetch_logs)


def _stop(cdir: ClusterDir, ui: UI, *, purge: bool, provider_name: str | None, fetch_logs: bool) -> list[str]:
    if not cdir.exists():
        if purge and cdir.root.exists():  # what an earlier stop kept: the logs
            cdir.remove_runtime(purge=True)
            return [f"removed {cdir.root}"]
        return []
    info, state, problem = None, None, ""
    try:
        info = cdir.load_info()
        state = cdir.load()
    except KubemarkUpError as exc:
        problem = exc.message
    if info is not None and provider_name and provider_name != info.provider:
        raise KubemarkUpError(f"cluster '{cdir.name}' was started by provider '{info.provider}', not '{provider_name}'")
    if info is None or state is None:
        return _sweep(cdir, info, ui, purge=purge, problem=problem)
    settings = recorded_settings(info)
    provider = load(settings)
    ctx = Context(dir=cdir, info=info, state=state, settings=settings, ui=ui, provider=provider,
                  fetch_logs=fetch_logs)
    ctx.state.phase = "stopping"
    ctx.save()
    try:
        count = len(state.processes)
        errors = _teardown(ctx, provider.steps(shared_steps()), purge=purge)
    finally:
        provider.close()
    if errors:
        raise KubemarkUpError(f"stop left {len(errors)} problem(s); state kept, run stop again", detail="\n".join(errors))
    return [f"stopped {count} process(es)"]


def recorded_settings(info: ClusterInfo) -> Settings:
    try:
        return Settings.model_validate(info.settings)
    except ValidationError:
        raise KubemarkUpError(f"the settings in cluster '{info.name}' are not this version's") from None


def _sweep(cdir: ClusterDir, info: ClusterInfo | None, ui: UI, *, purge: bool, problem: str) -> list[str]:
    """stop without a usable state.json: what runs is still found by its marker, with
    the provider of cluster.json, or on this machine alone when that is lost too."""
    if info is None:
        # Any run of this name: only this machine's processes can be found so. Its node
        # engine is unknown too: stock kubemark's sweep stops every hollow-node process
        # by its marker (a fleet's as well) and also removes what stock hollow kubelets
        # leave in /tmp.
        info = ClusterInfo(name=cdir.name, uid="", provider="local", settings={"node_engine": "kubemark"})
        where = "on this machine (cluster.json is lost too)"
    else:
        where = f"with provider {info.provider}"
    ui.warn(f"cannot use the state of cluster '{cdir.name}' ({problem}); stopping its processes by their marker {where}")
    settings = recorded_settings(info)
    provider = load(settings)
    ctx = Context(dir=cdir, info=info, state=ClusterState(), settings=settings, ui=ui, provider=provider)
    try:
        errors = provider.sweep(ctx)
    finally:
        provider.close()
    if errors:
        raise KubemarkUpError(f"processes of cluster '{cdir.name}' would not stop", detail="\n".join(errors))
    if purge:
        cdir.remove_runtime(purge=True)
    return ["stopped the processes found by their marker"]


def _teardown(ctx: Context, steps: list[Step], *, purge: bool) -> list[str]:
    """Run the undo of every recorded step, newest first; an undo that succeeds takes
    its step out of state, so a repeated stop only retries what failed."""
    errors: list[str] = []
    by_key = {step.key: step for step in steps}
    for key in reversed(list(ctx.state.steps)):
        step = by_key.get(key)
        if step is None:
            errors.append(f"state records a step '{key}' that provider {ctx.provider.name} does not know")
            continue
        problems: list[str] = []
        if step.undo is not None:
            with ctx.ui.step(step.undo_title or f"undo {key}") if step.undo_title else contextlib.nullcontext() as status:
                try:
                    problems = step.undo(ctx)
                except KubemarkUpError as exc:
                    problems = [exc.message]
                if problems and status is not None:
                    status.failed = True
        if problems:
            errors += problems
        else:
            del ctx.state.steps[key]
            ctx.save()
    if errors:
        return errors
    site = ctx.provider.master(ctx)
    if site.host.is_this_machine:
        busy = [f"{n} port {p}" for n, p in ctx.state.ports.items() if site.host.port_in_use(p)]
        if busy:
            # Ports are freed as soon as their processes are gone; if one is still held
            # it is by someone else now, so it is reported, not fought over.
            ctx.ui.warn(f"ports still in use by other processes: {', '.join(busy[:5])}")
    with ctx.ui.step("remove runtime files" + (" and logs" if purge else " (logs kept)")):
        ctx.dir.remove_runtime(purge=purge)
    return errors


# status, logs and locate ------------------------------------------------------------


def _loaded(name: str, home: Path) -> Context:
    cdir = ClusterDir(home, name)
    info = cdir.load_info()
    state = cdir.load()
    settings = recorded_settings(info)
    return Context(dir=cdir, info=info, state=state, settings=settings, ui=UI(), provider=load(settings))


def context(name: str, home: Path) -> Context:
    """A started cluster's context, for commands that work against it (run, env); the
    caller closes ctx.provider."""
    return _loaded(name, home)


def status(name: str, home: Path) -> dict:
    ctx = _loaded(name, home)
    try:
        return _status(ctx)
    finally:
        ctx.provider.close()


def _status(ctx: Context) -> dict:
    state = ctx.state
    site = ctx.provider.master(ctx)
    components = _components(ctx, site) if state.ports.keys() >= set(master.port_names(site.paths)) else {}
    names = master.order(site.paths)
    records = {n: r for n in names if (r := state.processes.get(n))}
    alive = site.host.alive(h for r in records.values() if (h := ctx.handle(r)))
    urls = [components[n].liveness_probe.url for n in names if n in components]
    probes = dict(zip([n for n in names if n in components],
                      site.host.probe_all(urls, timeout=2.0), strict=True))
    report_components = []
    for comp_name in names:
        record = records.get(comp_name)
        handle = ctx.handle(record) if record else None
        supervision = site.host.supervision(handle, record.log) if handle and record else None
        running = bool(handle and alive.get(handle)) and (supervision is None or supervision.running)
        report_components.append(
            {
                "name": comp_name,
                "pid": supervision.pid if supervision else (record.pid if record else None),
                "supervisor_pid": record.pid if supervision and record else None,
                "restarts": supervision.restarts if supervision else 0,
                "running": running,
                "healthy": bool(running and probes.get(comp_name)),
                "log": record.log if record else None,
            }
        )
    engine = ctx.provider.node_engine(ctx)
    failed = engine.failed(ctx) if state.nodes else {}
    kubeconfig_path = ctx.dir.kubeconfig
    ready, error = readiness.count_ready(kubeconfig_path, state.nodes) if kubeconfig_path.exists() else (None, "no kubeconfig")
    master_healthy = all(c["healthy"] for c in report_components)
    return {
        "name": ctx.info.name,
        "provider": ctx.info.provider,
        "phase": state.phase,
        "created_at": ctx.info.created_at,
        "endpoint": state.endpoint,
        "master_host": site.host.name,
        "kubeconfig": str(kubeconfig_path),
        "logs": site.paths.log_dir,
        "healthy": master_healthy and ready == len(state.nodes) and not failed,
        "master": {"healthy": master_healthy, "components": report_components},
        "nodes": {
            "total": len(state.nodes),
            "ready": ready,
            "processes_running": len(state.nodes) - len(failed),
            "error": error,
        },
    }


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
    ctx = _loaded(name, home)
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


def locate(name: str, home: Path, node: str) -> dict:
    ctx = _loaded(name, home)
    try:
        state = ctx.state
        resolved = node if node in state.nodes else None
        if resolved is None and ctx.dir.kubeconfig.exists():
            resolved = readiness.node_by_address(ctx.dir.kubeconfig, node, state.nodes)
        if resolved is None:
            last = f" (nodes are hollow-node-0 ... hollow-node-{len(state.nodes) - 1})" if state.nodes else ""
            raise NotFoundError(f"no hollow node '{node}' in cluster '{name}'{last}")
        location = ctx.provider.node_engine(ctx).locate(ctx, resolved)
        return {"node": location.node, "provider": ctx.info.provider, "where": location.where,
                "processes": location.details}
    finally:
        ctx.provider.close()

