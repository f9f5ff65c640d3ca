"""What a run makes, recorded before it is asked for, and its clean-up.

Every object a run makes lives in namespaces of its own, or is cluster-scoped (a
CRD, an APIService); each is recorded in <cluster>/runs/<id>.json (atomically,
0600) before it is created, and labelled with the run's id. cleanup deletes them,
and only them: an object is deleted only when it carries this run's label.
leftovers cleans what a run killed outright left, at the next run on the cluster.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel, ValidationError

from kubemark_up.errors import RunError
from kubemark_up.providers.base import ClusterContext
from kubemark_up.run.model import RUN_LABEL, Kube
from kubemark_up.ui import UI

CLEANUP_TIMEOUT = 300.0  # seconds for the run's namespaces to be gone


class RunRecord(BaseModel):
    id: str
    workload: str
    started_at: float
    status: str = "running"  # running -> cleaning -> cleaned
    namespaces: list[str] = []
    cluster_objects: list[str] = []  # paths of cluster-scoped objects (CRDs), deleted after the namespaces


def records_dir(ctx: ClusterContext) -> Path:
    return ctx.dir.root / "runs"


def save(path: Path, record: RunRecord) -> None:
    """Atomically, 0600 (the record says what to delete; it must never be half written)."""
    path.parent.mkdir(mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".run.", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        handle.write(record.model_dump_json(indent=1))
    os.replace(tmp, path)


def leftovers(ctx: ClusterContext, kube: Kube, ui: UI) -> None:
    """Clean what an earlier run on this cluster left (killed before it could)."""
    folder = records_dir(ctx)
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            record = RunRecord.model_validate_json(path.read_text())
        except (OSError, ValidationError):
            continue
        if record.status != "cleaned":
            ui.warn(f"run {record.id} did not clean up after itself; deleting its namespaces now")
            cleanup(kube, record, path, ui)


def cleanup(kube: Kube, record: RunRecord, path: Path, ui: UI) -> None:
    """Delete the run's namespaces and its cluster-scoped objects (each only when it
    carries the run's label), and wait until they are gone."""
    record.status = "cleaning"
    save(path, record)
    problems: list[str] = []
    what = f"{len(record.namespaces)} namespace(s)"
    if record.cluster_objects:
        what += f", {len(record.cluster_objects)} cluster-scoped object(s)"
    with ui.step(f"delete what run {record.id} made ({what})") as status:
        pending = []
        # Namespaces and cluster-scoped objects at once: a namespace whose objects' API goes
        # with a CRD or an APIService is only deleted once discovery no longer lists that API.
        for target in [f"/api/v1/namespaces/{name}" for name in record.namespaces] + list(record.cluster_objects):
            try:
                found = kube.request("GET", target, missing_ok=True)
                if found is None:
                    continue
                if (found["metadata"].get("labels") or {}).get(RUN_LABEL) != record.id:
                    problems.append(f"{target} is not this run's (no {RUN_LABEL}={record.id}): left alone")
                    continue
                kube.request("DELETE", target, body={"propagationPolicy": "Background"}, missing_ok=True)
                pending.append(target)
            except RunError as exc:
                problems.append(exc.message)
        deadline = time.monotonic() + CLEANUP_TIMEOUT
        while pending and time.monotonic() < deadline:
            try:
                pending = [t for t in pending if kube.request("GET", t, missing_ok=True)]
            except RunError as exc:
                problems.append(exc.message)
                break
            if pending:
                time.sleep(1)
        if pending:
            problems.append(f"still being deleted after {CLEANUP_TIMEOUT:.0f}s: {', '.join(pending)}")
        status.failed = bool(problems)
    for problem in problems:
        ui.warn(problem)
    if not problems:
        record.status = "cleaned"
    save(path, record)
