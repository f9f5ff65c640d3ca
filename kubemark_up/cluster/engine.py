"""start and stop: the same steps for every provider.

start is an ordered list of small steps (kubemark_up/steps.py): the shared ones of
steps/, with the provider's own put among them. Each is recorded in state.json before
it acts and marked done after; a failed or interrupted start undoes what it recorded.
stop is driven by state alone: it walks the recorded steps backwards and runs each
one's undo, collecting every problem rather than stopping at the first. A second
start over a cluster that exists is refused: stop it first. Without a usable state,
stop sweeps by the cluster's marks (its processes, a cloud provider's labels) and,
once that found nothing left, removes the cluster's files here so the name is free.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from pydantic import ValidationError

from kubemark_up.cluster.steps import shared_steps
from kubemark_up.config import Settings
from kubemark_up.errors import KubemarkUpError
from kubemark_up.providers import Provider, load
from kubemark_up.providers.base import ClusterContext
from kubemark_up.state import ClusterDir, ClusterInfo, ClusterState
from kubemark_up.steps import Step
from kubemark_up.ui import UI

# start ------------------------------------------------------------------------


def start(settings: Settings, home: Path, ui: UI) -> ClusterContext:
    """Bring up the cluster and wait until its hollow nodes are Ready. On any failure
    or interruption, stop what was started, then re-raise."""
    provider = load(settings)
    cdir = ClusterDir(home, settings.name)
    try:
        with cdir.lock():
            return _start(settings, cdir, provider, ui)
    finally:
        provider.close()


def _start(settings: Settings, cdir: ClusterDir, provider: Provider, ui: UI) -> ClusterContext:
    _refuse_existing(cdir)
    info = ClusterInfo(name=settings.name, provider=provider.name, settings=settings.model_dump(mode="json"))
    ctx = ClusterContext(dir=cdir, info=info, state=ClusterState(), settings=settings, ui=ui, provider=provider)
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


def _run_step(ctx: ClusterContext, step: Step) -> None:
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
    ctx = ClusterContext(dir=cdir, info=info, state=state, settings=settings, ui=ui, provider=provider,
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
    done = [f"stopped {count} process(es)"]
    if isinstance(provider, CloudResources):
        done.append(f"deleted {len(provider.deleted_resources())} cloud resource(s)")
    return done


@runtime_checkable
class CloudResources(Protocol):
    """A provider that deletes cloud resources in stop, and says how many."""

    def deleted_resources(self) -> list[str]:
        """What this command deleted in the cloud."""
        ...


def recorded_settings(info: ClusterInfo) -> Settings:
    try:
        return Settings.model_validate(info.settings)
    except ValidationError:
        raise KubemarkUpError(f"the settings in cluster '{info.name}' are not this version's") from None


def _sweep(cdir: ClusterDir, info: ClusterInfo | None, ui: UI, *, purge: bool, problem: str) -> list[str]:
    """stop without a usable state.json: what runs is still found by its marker, with
    the provider of cluster.json, or on this machine alone when that is lost too."""
    provider_known = info is not None
    if info is None:
        # Any run of this name: only this machine's processes can be found so. Its node
        # engine is unknown too: stock kubemark's sweep stops every hollow-node process
        # by its marker (a fleet's as well) and also removes what stock hollow kubelets
        # leave in /tmp.
        info = ClusterInfo(name=cdir.name, uid="", provider="local", settings={"node_engine": "kubemark"})
        where = "on this machine (cluster.json is lost too)"
    else:
        where = f"with provider {info.provider}"
    settings = recorded_settings(info)
    provider = load(settings)
    cloud = isinstance(provider, CloudResources)
    by = "what carries its marks (processes, cloud labels)" if cloud else "its processes by their marker"
    ui.warn(f"cannot use the state of cluster '{cdir.name}' ({problem}); stopping {by} {where}")
    ctx = ClusterContext(dir=cdir, info=info, state=ClusterState(), settings=settings, ui=ui, provider=provider)
    try:
        errors = provider.sweep(ctx)
    finally:
        provider.close()
    if errors:
        what = "cloud resources or processes" if cloud else "processes"
        raise KubemarkUpError(f"{what} of cluster '{cdir.name}' would not go; its files kept, run stop again",
                              detail="\n".join(errors))
    if isinstance(provider, CloudResources):
        deleted = provider.deleted_resources()
        done = [f"deleted {len(deleted)} cloud resource(s) found by its labels" if deleted
                else "found no cloud resource with its labels"]
    else:
        done = ["stopped the processes found by their marker"]
    if purge:
        cdir.remove_runtime(purge=True)
        return [*done, "removed its files and logs"]
    if provider_known:
        # cluster.json was read, so the sweep covered its provider: nothing of it runs
        # now, and its files here (certificates, keys, kubeconfig) only hold the name.
        # An unreadable state.json is kept for a look, beside the logs.
        with ui.step("remove runtime files (logs kept)"):
            kept = _keep_unreadable_state(cdir)
            cdir.remove_runtime(purge=False)
        done.append("removed its runtime files (logs kept" + (f", the unreadable state in {kept})" if kept else ")"))
    return done


def _keep_unreadable_state(cdir: ClusterDir) -> Path | None:
    if not cdir.state_file.exists():
        return None
    cdir.logs.mkdir(mode=0o700, parents=True, exist_ok=True)
    kept = cdir.logs / "state.json.unreadable"
    cdir.state_file.replace(kept)
    return kept


def _teardown(ctx: ClusterContext, steps: list[Step], *, purge: bool) -> list[str]:
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



def context(name: str, home: Path) -> ClusterContext:
    """A started cluster's context, for commands that work against it (run, env,
    status); the caller closes ctx.provider."""
    cdir = ClusterDir(home, name)
    info = cdir.load_info()
    state = cdir.load()
    settings = recorded_settings(info)
    return ClusterContext(dir=cdir, info=info, state=state, settings=settings, ui=UI(), provider=load(settings))
