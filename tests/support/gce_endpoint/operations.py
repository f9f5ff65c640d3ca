"""Operations: every change the endpoint makes runs as one, going PENDING, RUNNING, DONE
over op_seconds, the change committed when DONE (or undone, for an operation a fault
makes end in error); get and wait (which returns after at most WAIT_LIMIT) read them.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from tests.support.gce_endpoint.discovery import Rejected

WAIT_LIMIT = 120.0  # Operations.wait returns after at most this long, as the real one (2 minutes)


@dataclass
class Operation:
    body: dict
    scope: str  # "zones/<z>", "regions/<r>", "global"
    project: str
    created: float
    commit: Callable[[], None]  # the change, made when DONE
    error: dict | None = None
    done: bool = False


class Operations:
    """The endpoint's operations (its state is set up by ComputeEndpoint)."""

    operations: dict[tuple[str, str, str], Operation]  # (project, scope, name)
    op_seconds: float
    _changed: threading.Condition
    _ids: itertools.count[int]

    def _link(self, project: str, scope: str, *rest: str) -> str:
        return "/".join(["https://www.googleapis.com/compute/v1/projects", project, scope, *rest])

    def _operation(self, kind: str, project: str, scope: str, target: str, commit: Callable[[], None],
                   undo: Callable[[], None], op_error: str, op_message: str) -> dict:
        name = f"operation-{int(time.time() * 1000)}-{next(self._ids):x}"
        body = {"kind": "compute#operation", "id": str(next(self._ids)), "name": name, "operationType": kind,
                "targetLink": target, "status": "PENDING", "progress": 0,
                "insertTime": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                "selfLink": self._link(project, scope, "operations", name)}
        if scope.startswith("zones/"):
            body["zone"] = self._link(project, scope)
        elif scope.startswith("regions/"):
            body["region"] = self._link(project, scope)
        error = None
        if op_error:
            error = {"errors": [{"code": op_error, "message": op_message or f"injected {op_error}"}]}

            def failing() -> None:
                undo()

            self.operations[(project, scope, name)] = Operation(body, scope, project, time.monotonic(), failing, error)
        else:
            self.operations[(project, scope, name)] = Operation(body, scope, project, time.monotonic(), commit)
        return dict(body)

    def _advance(self) -> None:
        now = time.monotonic()
        for op in self.operations.values():
            if op.done:
                continue
            age = now - op.created
            if age >= self.op_seconds:
                op.commit()
                op.done = True
                op.body.update(status="DONE", progress=100,
                               endTime=dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"))
                if op.error is not None:
                    op.body["error"] = op.error
                    op.body["httpErrorStatusCode"] = 403 if op.error["errors"][0]["code"] == "QUOTA_EXCEEDED" else 400
                self._changed.notify_all()
            elif age >= self.op_seconds / 2 and op.body["status"] == "PENDING":
                op.body.update(status="RUNNING", progress=50,
                               startTime=dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"))

    def _operation_call(self, verb: str, project: str, scope: str, name: str) -> dict:
        op = self.operations.get((project, scope, name))
        if op is None:
            raise Rejected(404, f"The resource 'projects/{project}/{scope}/operations/{name}' was not found", "notFound")
        if verb == "wait":
            deadline = time.monotonic() + WAIT_LIMIT
            while not op.done and time.monotonic() < deadline:
                self._changed.wait(timeout=min(0.02, self.op_seconds / 4 or 0.01))
                self._advance()
        elif verb != "get":
            raise Rejected(501, f"operations {verb} is not implemented by the test endpoint", "notImplemented")
        return dict(op.body)
