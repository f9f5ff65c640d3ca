"""`kubemark-up run`: one workload against a running cluster's master, measured.

The run is bounded before it starts (its plan's object count against max_objects,
the whole run against a deadline). Every object it makes lives in namespaces of its
own (or is cluster-scoped: a CRD, an APIService), each recorded before it is
created and labelled with the run's id (records.py); whatever ends the run (its
end, a failure, Ctrl-C, SIGTERM) those are deleted, shielded from a second signal,
and only those. A record left by a run that was killed outright is cleaned up by
the next run on the cluster. What was measured up to a failure is written, marked
partial, before the clean-up.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kubemark_up import __version__, cluster, master, readiness
from kubemark_up.errors import ConfigError, KubemarkUpError, RunError
from kubemark_up.providers.base import ClusterContext
from kubemark_up.run import measurements, records, workloads
from kubemark_up.run.measurements import MeasureContext, Measurement
from kubemark_up.run.model import RUN_LABEL, Kube, Result, Sampler
from kubemark_up.run.workloads.base import RunContext
from kubemark_up.run.workloads.informer import InformerLogger
from kubemark_up.ui import UI


@dataclass
class RunRequest:
    cluster: str
    home: Path
    workload: str
    options: dict[str, Any] = field(default_factory=dict)
    measurements: list[str] | None = None  # None: all
    slos: dict[str, float] = field(default_factory=dict)
    out: Path | None = None
    timeout: float = 1800.0
    interval: float = 10.0  # seconds between scrapes and samples
    max_objects: int = 100_000


@dataclass
class RunOutcome:
    meta: dict[str, Any]
    results: list[Result]

    @property
    def ok(self) -> bool:
        return all(slo.ok for r in self.results for slo in r.slos)


def check_request(request: RunRequest) -> tuple[type[workloads.Workload], workloads.WorkloadOptions, list[str]]:
    """Everything that can be checked before the cluster is touched."""
    cls = workloads.get(request.workload)
    try:
        options = cls.options_model.model_validate(request.options)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = ".".join(str(p) for p in error["loc"])
        if error["type"] == "extra_forbidden":
            known = ", ".join(cls.options_model.model_fields)
            raise ConfigError(f"workload {cls.name} has no option '{name}' (it has: {known})") from None
        raise ConfigError(f"{name}: {error['msg'].removeprefix('Value error, ')}") from None
    chosen = request.measurements if request.measurements is not None else measurements.names()
    for name in chosen:
        measurements.get(name)
    known_slos = measurements.slo_names()
    for name, value in request.slos.items():
        if name not in known_slos:
            raise ConfigError(f"unknown SLO '{name}' (known: {', '.join(known_slos)})")
        if value <= 0:
            raise ConfigError(f"SLO {name} must be above 0 seconds, not {value}")
    if request.timeout <= 0 or request.interval <= 0:
        raise ConfigError("--timeout and --interval must be above 0")
    return cls, options, list(chosen)


def run(request: RunRequest, ui: UI) -> RunOutcome:
    workload_cls, options, chosen = check_request(request)
    ctx = cluster.context(request.cluster, request.home)
    try:
        if ctx.state.phase != "running":
            raise RunError(f"cluster '{request.cluster}' is not running (phase {ctx.state.phase})")
        with ctx.dir.lock():
            return _run(ctx, request, workload_cls(options), chosen, ui)
    finally:
        ctx.provider.close()


def _run(ctx: ClusterContext, request: RunRequest, workload: workloads.Workload, chosen: list[str], ui: UI) -> RunOutcome:
    kube = Kube(ctx.dir.kubeconfig)
    records.leftovers(ctx, kube, ui)
    ready, problem = readiness.count_ready(ctx.dir.kubeconfig, ctx.state.nodes)
    if ready is None:
        raise RunError(f"cannot count the Ready nodes of cluster '{ctx.info.name}': {problem}")
    if not ready and workload.needs_nodes:
        raise RunError(f"cluster '{ctx.info.name}' has no Ready hollow node to run {workload.name} on")
    plan = workload.plan(ready)
    if plan.objects > request.max_objects:
        raise ConfigError(
            f"{workload.name} on {ready} nodes would make {plan.objects} objects, more than --max-objects {request.max_objects}"
        )
    run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
    record_path = records.records_dir(ctx) / f"{run_id}.json"
    record = records.RunRecord(id=run_id, workload=workload.name, started_at=time.time())
    records.save(record_path, record)

    def make_namespace(index: int) -> str:
        name = f"kubemark-run-{run_id}-{index}"
        record.namespaces.append(name)
        records.save(record_path, record)  # recorded before it is asked for
        kube.request("POST", "/api/v1/namespaces", body={
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {RUN_LABEL: run_id}},
        })
        return name

    def make_cluster_object(collection: str, body: dict) -> dict:
        record.cluster_objects.append(f"{collection}/{body['metadata']['name']}")
        records.save(record_path, record)  # recorded before it is asked for
        created: dict = kube.request("POST", collection, body=body)
        return created

    deadline = time.monotonic() + request.timeout
    sampler = _sampler(ctx)
    run_ctx = RunContext(kube=kube, run_id=run_id, nodes=ready, deadline=deadline, make_namespace=make_namespace,
                         make_cluster_object=make_cluster_object, sampler=sampler, cluster=ctx)
    mctx = MeasureContext(kube=kube, run_id=run_id, slo_overrides=request.slos, sampler=sampler,
                          interval=request.interval, component_metrics=_component_metrics(ctx))
    taken: list[Measurement] = [measurements.get(name)(mctx) for name in chosen]
    for measurement in taken:
        if measurement.name == "api_latency":
            mctx.scrape_seconds = lambda m=measurement: list(getattr(m, "scrape_seconds", []))
    ui.info(f"run {run_id}: {workload.name} on {ready} Ready nodes of cluster '{ctx.info.name}': "
            f"at most {plan.objects} objects ({plan.pods} pods), phases {', '.join(plan.phases)}; "
            f"timeout {request.timeout:.0f}s")
    started: list[Measurement] = []
    informer: InformerLogger | None = None
    try:
        from kubemark_up.run.reports.live import LiveView

        workload.prepare(run_ctx)
        if workload.options.informer:
            watched = workload.watched(run_ctx)
            if watched is None:
                raise ConfigError(f"workload {workload.name} has nothing for the informer logger to watch")
            informer = InformerLogger(kube, watched, f"{RUN_LABEL}={run_id}", run_ctx.writes)
            informer.start()
        with LiveView(ui, run_ctx.progress, taken):
            mctx.started_at = time.time()
            for measurement in taken:
                measurement.start()
                started.append(measurement)
            workload.run(run_ctx)
            run_ctx.finish()
            mctx.finished_at = time.time()
            if informer is not None:
                informer.settle()
            for measurement in reversed(started):
                measurement.stop()
            started.clear()
    except BaseException as exc:
        # Interrupted (Ctrl-C, SIGTERM) or failed: what was measured up to here goes to
        # --out, marked partial, before the clean-up (which may take minutes).
        with cluster.shielded():
            _stop_all(started)
            if request.out is not None and mctx.started_at:
                mctx.finished_at = time.time()
                _write_partial(request.out, _ended_by(exc), lambda: _meta(
                    ctx, kube, request, workload, plan, run_ctx, mctx, ready), taken, ui)
        raise
    finally:
        with cluster.shielded():
            if informer is not None:
                informer.stop()
            _stop_all(started)
            try:
                workload.close()
            except KubemarkUpError as exc:
                ui.warn(exc.message)
            records.cleanup(kube, record, record_path, ui)
    results = [m.result() for m in taken] + workload.results()
    if informer is not None:
        results.append(informer.result())
    meta = _meta(ctx, kube, request, workload, plan, run_ctx, mctx, ready)
    return RunOutcome(meta=meta, results=results)


def _stop_all(started: list[Measurement]) -> None:
    while started:
        with contextlib.suppress(Exception):
            started.pop().stop()


def _ended_by(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):  # SIGTERM is raised as one too (cli/app.py)
        return "interrupted"
    if isinstance(exc, KubemarkUpError):
        return f"failed: {exc.message}"
    return f"failed: {type(exc).__name__}: {exc}"


def _write_partial(out: Path, ended: str, meta_of: Callable[[], dict[str, Any]], taken: list[Measurement],
                   ui: UI) -> None:
    """Each measurement's result so far (one that cannot make one says so in its notes)
    and the report, marked partial; a failure to write is warned about, never raised
    over the error that ended the run."""
    from kubemark_up.run.reports import html

    results = []
    for measurement in taken:
        try:
            results.append(measurement.result())
        except Exception as exc:  # partial data a measurement did not expect: noted, not fatal
            results.append(Result(measurement.name, measurement.title,
                                  notes=[f"no result from the partial data: {type(exc).__name__}: {exc}"]))
    try:
        meta = meta_of()
        meta["partial"] = True
        meta["run"]["ended"] = ended
        written = html.write_all(out.absolute(), meta, results)
    except Exception as exc:  # the run's own error matters more
        ui.warn(f"could not write the partial results to {out}: {type(exc).__name__}: {exc}")
        return
    ui.warn(f"run {ended}: partial results ({len(written)} file(s)) in {out.absolute()}")


def _sampler(ctx: ClusterContext) -> Sampler | None:
    """CPU and memory of the master's components, read on the host that runs them."""
    site = ctx.provider.master(ctx)
    host = site.host
    processes = {n: r for n, r in ctx.state.processes.items() if r.role == "master"}
    if not processes:
        return None

    def components() -> dict[str, int]:
        found = {}
        for name, record in processes.items():
            handle = ctx.handle(record)
            if handle is None:
                continue
            supervision = host.supervision(handle, record.log)
            pid = supervision.pid if supervision is not None else record.pid
            if pid:
                found[name] = pid
        return found

    return Sampler(sample=host.usage, components=components, where=host.name)


def _component_metrics(ctx: ClusterContext) -> Callable[[str], str]:
    """A master component's /metrics, read on the host that runs it (they listen on its
    loopback; the manifests let anyone there read /metrics, as clusterloader2 does)."""
    host = ctx.provider.master(ctx).host
    ports = dict(ctx.state.ports)

    def read(component: str) -> str:
        url = master.metrics_url(component, ports)
        try:
            status, body = host.fetch(url)
        except KubemarkUpError as exc:
            raise RunError(f"cannot read {component}'s /metrics on {host.name}: {exc.message}") from None
        if status != 200:
            hint = " (a cluster started before kubemark-up opened /metrics to the measurements: restart it)" \
                if status in (401, 403) else ""
            raise RunError(f"{component}'s /metrics on {host.name} answered HTTP {status}{hint}")
        return body

    return read


def _meta(ctx: ClusterContext, kube: Kube, request: RunRequest, workload: workloads.Workload, plan: workloads.Plan,
          run_ctx: RunContext, mctx: MeasureContext, ready: int) -> dict[str, Any]:
    """What a result stands on: the cluster's shape, versions and settings, the run's options and rates."""
    try:
        version = kube.request("GET", "/version").get("gitVersion")
    except KubemarkUpError:
        version = None
    create = next((p for p in run_ctx.progress.phases if p.get("requested_rate")), {})
    return {
        "tool_version": __version__,
        "partial": False,  # True when the run was interrupted or failed: what was measured until then
        "cluster": {
            "name": ctx.info.name,
            "provider": ctx.info.provider,
            "nodes": len(ctx.state.nodes),
            "nodes_ready": ready,
            "hollow_nodes": ctx.settings.hollow_nodes,
            "kubernetes_version": ctx.settings.kubernetes_version,
            "apiserver_version": version,
            "etcd_version": ctx.settings.etcd_version,
            "watch_cache": ctx.settings.watch_cache,
            "settings": ctx.info.settings,
        },
        "run": {
            "id": run_ctx.run_id,
            "workload": workload.name,
            "options": workload.options.model_dump(),
            "plan": {"objects": plan.objects, "pods": plan.pods, "phases": plan.phases},
            "started_at": mctx.started_at,
            "finished_at": mctx.finished_at,
            "seconds": round(mctx.finished_at - mctx.started_at, 3),
            "objects_created": run_ctx.progress.created,
            "requested_rate": create.get("requested_rate"),
            "achieved_rate": create.get("achieved_rate"),
            "phases": run_ctx.progress.phases,
            "ended": "completed",
            "slo_overrides": request.slos,
            "interval_seconds": request.interval,
        },
    }
