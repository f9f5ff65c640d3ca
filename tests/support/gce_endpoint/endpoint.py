"""The endpoint itself: an HTTP server on loopback that checks each request (discovery.py),
lets a fault the test set up have its way with it, answers it from what it keeps
(resources.py, operations.py, guest.py) or as an error in the API's shape, and logs it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.gce_endpoint.discovery import Rejected, _discovery
from tests.support.gce_endpoint.guest import Guest
from tests.support.gce_endpoint.operations import Operation
from tests.support.gce_endpoint.resources import COLLECTIONS, _fingerprint

_OPERATIONS = {"zoneOperations": "zones", "regionOperations": "regions", "globalOperations": "global"}


@dataclass
class Fault:
    """What happens to the next `times` requests of one method: an HTTP error
    (status, reason, message), or an operation that ends in error (op_error: its
    code), or a hold: the request waits until release() (held is set when it arrives),
    or vanish: someone else deletes the resource the request names just before it."""

    method_id: str
    status: int = 0
    reason: str = ""
    message: str = ""
    op_error: str = ""
    times: int = 1
    hold: bool = False
    vanish: bool = False
    held: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        self.released.set()


@dataclass
class Logged:
    at: float  # time.time()
    verb: str
    path: str
    method_id: str
    status: int



class ComputeEndpoint(Guest):
    def __init__(self, *, external_ip: str = "127.0.0.1", op_seconds: float = 0.1,
                 authorized_keys: Path | None = None, host_keys: list[str] | None = None,
                 serial: bool = True, guest_attributes: bool = True, port: int = 0) -> None:
        self.discovery = _discovery()
        self.port = port  # 0: a free one
        self.host_keys = list(host_keys or [])
        self.serial = serial
        self.guest_attributes = guest_attributes
        self.external_ip = external_ip
        self.op_seconds = op_seconds
        self.authorized_keys = authorized_keys
        self.resources: dict[tuple[str, str, str, str], dict] = {}  # (collection, project, scope, name)
        self.operations: dict[tuple[str, str, str], Operation] = {}  # (project, scope, name)
        self.faults: list[Fault] = []
        self.log: list[Logged] = []
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._ids = itertools.count(1_000_000_001)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._granted_keys: dict[str, list[str]] = {}  # instance selfLink -> key lines it added
        self._by_request: dict[str, Operation] = {}  # requestId -> the operation it started

    # Life ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> ComputeEndpoint:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return None

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, answer = endpoint.handle(self.command, self.path, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        for fault in self.faults:
            fault.release()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> ComputeEndpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # What tests look at -------------------------------------------------------------

    def fault(self, method_id: str, **how: Any) -> Fault:
        made = Fault(method_id, **how)
        with self._lock:
            self.faults.append(made)
        return made

    def items(self, collection: str | None = None) -> list[dict]:
        with self._lock:
            self._advance()
            return [r for (c, *_), r in self.resources.items() if collection in (None, c)]

    def names(self) -> set[str]:
        return {f"{r['kind'].split('#')[1]}/{r['name']}" for r in self.items()}

    def put(self, collection: str, project: str, scope: str, body: dict) -> dict:
        """Make a resource directly, as someone else would have (no operation, no log)."""
        with self._lock:
            made = self._fill(COLLECTIONS[collection], project, scope, dict(body), COLLECTIONS[collection].ready)
            if collection == "instances":
                made.setdefault("metadata", {})["fingerprint"] = _fingerprint()
            self.resources[(collection, project, scope, made["name"])] = made
            return made

    def remove(self, collection: str, project: str, scope: str, name: str) -> None:
        """Delete a resource behind the provider's back."""
        with self._lock:
            self._forget(collection, project, scope, name)

    def calls(self, since: float = 0.0) -> list[Logged]:
        with self._lock:
            return [entry for entry in self.log if entry.at >= since]

    # Serving ------------------------------------------------------------------------

    def handle(self, verb: str, target: str, body: bytes) -> tuple[int, dict]:
        parts = urlsplit(target)
        method_id = ""
        try:
            method, path_params = self.discovery.match(verb, parts.path)
            method_id = method["id"]
            query = parse_qs(parts.query, keep_blank_values=True)
            parsed = self.discovery.check(method, path_params, query, body)
            fault = self._take_fault(method_id)
            if fault is not None and fault.hold:
                fault.held.set()
                fault.released.wait(timeout=300)
                fault = None
            if fault is not None and fault.vanish:
                collection = COLLECTIONS[method_id.split(".")[1]]
                self.remove(collection.name, path_params["project"], _scope_of(collection.scope, path_params),
                            path_params[collection.param])
                fault = None
            if fault is not None and fault.status:
                raise Rejected(fault.status, fault.message or f"injected {fault.status}", fault.reason or "injected")
            request_id = query.get("requestId", [""])[0]
            with self._lock:
                self._advance()
                if request_id and request_id in self._by_request:
                    # The same request again (a retry): the operation it started, done once.
                    return self._logged(verb, parts.path, method_id, 200, dict(self._by_request[request_id].body))
                answer = self._dispatch(method_id, path_params, {k: v[0] for k, v in query.items()}, parsed,
                                        fault.op_error if fault is not None else "",
                                        fault.message if fault is not None else "")
                if request_id and answer.get("kind") == "compute#operation":
                    self._by_request[request_id] = self.operations[(path_params["project"], _op_scope(answer), answer["name"])]
            status = 200
        except Rejected as exc:
            status = exc.code
            answer = {"error": {"code": exc.code, "message": exc.message,
                                "errors": [{"message": exc.message, "domain": "global", "reason": exc.reason}]}}
        return self._logged(verb, parts.path, method_id, status, answer)

    def _logged(self, verb: str, path: str, method_id: str, status: int, answer: dict) -> tuple[int, dict]:
        with self._lock:
            self.log.append(Logged(time.time(), verb, path, method_id, status))
        return status, answer

    def _take_fault(self, method_id: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.method_id == method_id and fault.times > 0:
                    fault.times -= 1
                    return fault
        return None

    def _dispatch(self, method_id: str, params: dict[str, str], query: dict[str, str], body: Any,
                  op_error: str, op_message: str) -> dict:
        _, resource, verb = method_id.split(".")
        project = params["project"]
        if resource in _OPERATIONS:
            scope = _scope_of(_OPERATIONS[resource], params)
            return self._operation_call(verb, project, scope, params["operation"])
        collection = COLLECTIONS.get(resource)
        if collection is None:
            raise Rejected(501, f"{method_id} is valid compute v1 but not implemented by the test endpoint", "notImplemented")
        if verb == "aggregatedList":
            return self._aggregated(collection, project, query)
        scope = _scope_of(collection.scope, params)
        if verb == "list":
            return self._list(collection, project, scope, query)
        if verb == "insert":
            return self._insert(collection, project, scope, body, op_error, op_message)
        name = params[collection.param]
        if verb == "get":
            return self._get(collection, project, scope, name)
        if verb == "delete":
            return self._delete(collection, project, scope, name, op_error, op_message)
        if verb == "patch" and collection.name == "firewalls":
            return self._patch(collection, project, scope, name, body)
        if collection.name == "instances" and verb == "setMetadata":
            return self._set_metadata(project, scope, name, body)
        if collection.name == "instances" and verb == "getSerialPortOutput":
            return self._serial_port(project, scope, name, query)
        if collection.name == "instances" and verb == "getGuestAttributes":
            return self._guest_attributes(project, scope, name, query)
        raise Rejected(501, f"{method_id} is valid compute v1 but not implemented by the test endpoint", "notImplemented")


def _op_scope(op: dict) -> str:
    for key in ("zone", "region"):
        if key in op:
            return op[key].split("/projects/", 1)[1].split("/", 1)[1]
    return "global"


def _scope_of(kind: str, params: dict[str, str]) -> str:
    if kind == "zones":
        return f"zones/{params['zone']}"
    if kind == "regions":
        return f"regions/{params['region']}"
    return "global"


@contextlib.contextmanager
def running(**options: Any) -> Iterator[ComputeEndpoint]:
    endpoint = ComputeEndpoint(**options)
    with endpoint:
        yield endpoint
