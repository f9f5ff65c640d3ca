"""A local Compute Engine endpoint for the tests: what the real google-cloud-compute
client talks to when KUBEMARK_UP_GCE_ENDPOINT names it.

Strict: every request is checked against the official compute v1 discovery document
(shipped in the google-api-python-client wheel, read from the installed package): the
HTTP method and path must be one of its methods', path parameters must match their
patterns, query parameters must be the method's or the API's standard ones and of
their type, and the JSON body must hold only fields of the method's request schema,
of their types, with the fields that schema marks required for this method. Anything
else is a 400, as the real API would refuse it, so a provider that passes here sends
only what Compute accepts.

Behind that it keeps what it was asked to create (disks, instances, addresses,
firewalls), in memory, with the API's own refusals: a name taken (409), a disk
attached to a running instance or an address in use cannot be deleted, an instance
needs its disks and its reserved address to exist. Changes run as operations that go
PENDING, RUNNING, DONE over op_seconds, the change committed when DONE; faults make
one fail (an HTTP error, or an operation ending in error), and a hold stops a request
until the test lets it through. Every request is logged (for the benchmark).

An instance that reaches RUNNING with `ssh-keys` in its metadata has those keys put
into `authorized_keys` (if set), as the guest environment of a real image does, and
removed when it is deleted: so SSH to its natIP (external_ip, a loopback address
where a test sshd listens) logs in with the key the provider put there; setMetadata
(with the metadata's current fingerprint, else 412) puts the new ones in place.

A running instance also shows its SSH host keys (host_keys, the public key lines of
the test sshd) as a real one does: in its guest attributes under hostkeys/ (when its
metadata has enable-guest-attributes=TRUE; each entry keyed by the key's type, its
value the key itself) and on its serial port 1, printed between the BEGIN/END SSH
HOST KEY KEYS lines at boot (serial=False: a console that printed none;
guest_attributes=False: a guest environment that publishes none).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import functools
import importlib.resources
import itertools
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

SERVICE_PATH = "/compute/v1/"
# The standard system parameters also go by a "$" name (Google's "System Parameters"
# page); the REST client sends $alt.
_ALIASES = {"$alt": "alt"}
WAIT_LIMIT = 120.0  # Operations.wait returns after at most this long, as the real one (2 minutes)


@functools.cache
def discovery_document() -> dict:
    path = importlib.resources.files("googleapiclient") / "discovery_cache" / "documents" / "compute.v1.json"
    return json.loads(path.read_text())


class Rejected(Exception):
    def __init__(self, code: int, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.code, self.message, self.reason = code, message, reason


# Checking requests against the discovery document ----------------------------------------


@dataclass(frozen=True)
class Route:
    verb: str
    regex: re.Pattern[str]
    literal: int  # literal characters: a literal segment wins over a parameter
    method: dict


class Discovery:
    def __init__(self, doc: dict) -> None:
        self.doc = doc
        self.schemas: dict[str, dict] = doc["schemas"]
        self.global_params: dict[str, dict] = doc["parameters"]
        self.routes: list[Route] = []
        for resource in doc["resources"].values():
            for method in resource["methods"].values():
                template = method.get("flatPath", method["path"])
                pattern = re.sub(r"\\\{([A-Za-z0-9_]+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
                literal = len(re.sub(r"\{[^}]+\}", "", template))
                self.routes.append(Route(method["httpMethod"], re.compile(pattern + r"\Z"), literal, method))
        self.routes.sort(key=lambda r: -r.literal)

    def match(self, verb: str, path: str) -> tuple[dict, dict[str, str]]:
        if not path.startswith(SERVICE_PATH):
            raise Rejected(404, f"no such path {path} (not under {SERVICE_PATH})", "notFound")
        rest = path[len(SERVICE_PATH):]
        other_verbs = []
        for route in self.routes:
            found = route.regex.match(rest)
            if found is None:
                continue
            if route.verb != verb:
                other_verbs.append(route.verb)
                continue
            return route.method, found.groupdict()
        if other_verbs:
            raise Rejected(405, f"{verb} is not allowed on {path} (allowed: {', '.join(sorted(set(other_verbs)))})")
        raise Rejected(404, f"no compute v1 method at {verb} {path}", "notFound")

    def check(self, method: dict, path_params: dict[str, str], query: dict[str, list[str]], body: bytes) -> Any:
        """Refuse what the method does not allow; the parsed body if it has one."""
        params: dict[str, dict] = method.get("parameters", {})
        for name, value in path_params.items():
            spec = params.get(name)
            if spec is None or spec.get("location") != "path":
                raise Rejected(400, f"path parameter {name} is not one of {method['id']}'s")
            if "pattern" in spec and not re.fullmatch(spec["pattern"], value):
                raise Rejected(400, f"Invalid value for field '{name}': '{value}'. Must match `{spec['pattern']}`")
        for raw_name, values in query.items():
            name = _ALIASES.get(raw_name, raw_name)
            spec = params.get(name) if params.get(name, {}).get("location") == "query" else self.global_params.get(name)
            if spec is None:
                raise Rejected(400, f"Invalid JSON payload received. Unknown name \"{raw_name}\": Cannot bind query parameter. "
                               f"Field '{raw_name}' could not be found in request message ({method['id']}).")
            if len(values) > 1 and not spec.get("repeated"):
                raise Rejected(400, f"query parameter {raw_name} given {len(values)} times")
            for value in values:
                if name == "alt" and raw_name == "$alt":
                    value = value.split(";")[0]  # "json;enum-encoding=int": the REST client's
                _check_scalar(value, spec, f"query parameter {raw_name}", from_query=True)
        for name, spec in params.items():
            if spec.get("required") and spec.get("location") == "query" and name not in query:
                raise Rejected(400, f"Required query parameter '{name}' is missing ({method['id']})")
        if "request" not in method:
            if body.strip():
                raise Rejected(400, f"{method['id']} takes no request body")
            return None
        try:
            parsed = json.loads(body or b"null")
        except ValueError:
            raise Rejected(400, "Invalid JSON payload received.") from None
        if not isinstance(parsed, dict):
            raise Rejected(400, f"{method['id']}: the request body must be a JSON object")
        self.check_value(parsed, method["request"], "resource", method["id"])
        return parsed

    def check_value(self, value: Any, schema: dict, where: str, method_id: str) -> None:
        if "$ref" in schema:
            schema = self.schemas[schema["$ref"]]
        kind = schema.get("type")
        if kind == "object":
            if not isinstance(value, dict):
                raise Rejected(400, f"Invalid value for field '{where}': expected an object")
            props: dict[str, dict] = schema.get("properties", {})
            extra = schema.get("additionalProperties")
            for key, item in value.items():
                if key in props:
                    self.check_value(item, props[key], f"{where}.{key}", method_id)
                elif extra is not None:
                    self.check_value(item, extra, f"{where}.{key}", method_id)
                else:
                    raise Rejected(400, f"Invalid JSON payload received. Unknown name \"{key}\" at '{where}': "
                                   "Cannot find field.")
            for key, spec in props.items():
                if method_id in spec.get("annotations", {}).get("required", []) and key not in value:
                    raise Rejected(400, f"Required field '{where}.{key}' not specified", "required")
        elif kind == "array":
            if not isinstance(value, list):
                raise Rejected(400, f"Invalid value for field '{where}': expected a list")
            for index, item in enumerate(value):
                self.check_value(item, schema["items"], f"{where}[{index}]", method_id)
        elif kind == "any" or kind is None:
            return
        else:
            _check_scalar(value, schema, f"field '{where}'", from_query=False)


_INT_FORMATS = {"int64", "uint64", "int32", "uint32"}


def _check_scalar(value: Any, spec: dict, where: str, *, from_query: bool) -> None:
    kind, fmt = spec.get("type"), spec.get("format")
    bad = Rejected(400, f"Invalid value for {where}: {value!r} (expected {kind}{f' {fmt}' if fmt else ''})")
    if kind == "string":
        if fmt in _INT_FORMATS:  # 64-bit integers travel as JSON strings; a number is taken too
            if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and re.fullmatch(r"-?\d+", value))):
                raise bad
            return
        if not isinstance(value, str):
            raise bad
        if "enum" in spec and value not in spec["enum"]:
            raise Rejected(400, f"Invalid value for {where}: {value!r} (one of {', '.join(spec['enum'])})")
    elif kind == "integer":
        if from_query:
            if not re.fullmatch(r"-?\d+", str(value)):
                raise bad
        elif isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.isdigit())):
            raise bad
    elif kind == "number":
        if from_query:
            try:
                float(value)
            except ValueError:
                raise bad from None
        elif isinstance(value, bool) or not isinstance(value, int | float | str):
            raise bad
    elif kind == "boolean" and value not in (("true", "false") if from_query else (True, False)):
        raise bad


# List filters ---------------------------------------------------------------------------------

_TERM = re.compile(
    r"""\(?\s*(?P<field>[A-Za-z][\w.\-]*)\s*(?P<op>!=|=|:|\beq\b|\bne\b)\s*(?P<value>"[^"]*"|'[^']*'|[^\s()]+)\s*\)?""",
)


def parse_filter(text: str) -> Callable[[dict], bool]:
    """The subset of Compute's list filter grammar the provider uses: terms FIELD = V,
    FIELD != V, FIELD:* (has), FIELD:V, FIELD eq RE2, FIELD ne RE2, joined by spaces or
    AND. Anything else is refused, loudly: a filter silently ignored lists too much."""
    terms: list[tuple[str, str, str]] = []
    rest = text.strip()
    while rest:
        found = _TERM.match(rest)
        if found is None:
            raise Rejected(400, f"Invalid value for field 'filter': '{text}'. Invalid list filter expression.")
        value = found["value"]
        if value[:1] in "\"'":
            value = value[1:-1]
        terms.append((found["field"], found["op"], value))
        rest = rest[found.end():].lstrip()
        if rest.upper().startswith("AND "):
            rest = rest[4:].lstrip()

    def lookup(item: dict, path: str) -> Any:
        value: Any = item
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value

    def test(item: dict) -> bool:
        for name, op, value in terms:
            got = lookup(item, name)
            text_value = "" if got is None else str(got)
            if op == ":":
                ok = got is not None if value == "*" else value in text_value
            elif op == "=":
                ok = got is not None and _glob(value, text_value)
            elif op == "!=":
                ok = not (got is not None and _glob(value, text_value))
            elif op == "eq":
                ok = got is not None and re.fullmatch(value, text_value) is not None
            else:
                ok = not (got is not None and re.fullmatch(value, text_value) is not None)
            if not ok:
                return False
        return True

    return test


def _glob(pattern: str, value: str) -> bool:
    return re.fullmatch(".*".join(re.escape(part) for part in pattern.split("*")), value) is not None


# What the endpoint keeps ------------------------------------------------------------------------


@dataclass(frozen=True)
class Collection:
    name: str  # as in the path: disks, instances, addresses, firewalls
    scope: str  # zones, regions or global
    param: str  # the path parameter that names one
    kind: str
    ready: str  # status once created ("" for none)
    creating: str
    deleting: str


COLLECTIONS = {
    c.name: c for c in (
        Collection("disks", "zones", "disk", "compute#disk", "READY", "CREATING", "DELETING"),
        Collection("instances", "zones", "instance", "compute#instance", "RUNNING", "PROVISIONING", "STOPPING"),
        Collection("addresses", "regions", "address", "compute#address", "RESERVED", "RESERVING", "RESERVED"),
        Collection("firewalls", "global", "firewall", "compute#firewall", "", "", ""),
    )
}
_OPERATIONS = {"zoneOperations": "zones", "regionOperations": "regions", "globalOperations": "global"}
_LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")


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


@dataclass
class Operation:
    body: dict
    scope: str  # "zones/<z>", "regions/<r>", "global"
    project: str
    created: float
    commit: Callable[[], None]  # the change, made when DONE
    error: dict | None = None
    done: bool = False


class ComputeEndpoint:
    def __init__(self, *, external_ip: str = "127.0.0.1", op_seconds: float = 0.1,
                 authorized_keys: Path | None = None, host_keys: list[str] | None = None,
                 serial: bool = True, guest_attributes: bool = True) -> None:
        self.discovery = _discovery()
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
        self._granted_keys: dict[str, list[str]] = {}
        self._by_request: dict[str, Operation] = {}  # requestId -> the operation it started  # instance selfLink -> key lines it added

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

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
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

    # Resources ------------------------------------------------------------------------

    def _link(self, project: str, scope: str, *rest: str) -> str:
        return "/".join(["https://www.googleapis.com/compute/v1/projects", project, scope, *rest])

    def _fill(self, collection: Collection, project: str, scope: str, body: dict, status: str) -> dict:
        body.update(kind=collection.kind, id=str(next(self._ids)),
                    creationTimestamp=dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                    selfLink=self._link(project, scope, collection.name, body.get("name", "")))
        if collection.scope == "zones":
            body["zone"] = self._link(project, scope)
        elif collection.scope == "regions":
            body["region"] = self._link(project, scope)
        if status:
            body["status"] = status
        return body

    def _not_found(self, collection: Collection, project: str, scope: str, name: str) -> Rejected:
        return Rejected(404, f"The resource 'projects/{project}/{scope}/{collection.name}/{name}' was not found", "notFound")

    def _get(self, collection: Collection, project: str, scope: str, name: str) -> dict:
        found = self.resources.get((collection.name, project, scope, name))
        if found is None:
            raise self._not_found(collection, project, scope, name)
        return found

    def _list(self, collection: Collection, project: str, scope: str, query: dict[str, str]) -> dict:
        test = parse_filter(query.get("filter", ""))
        items = [r for (c, p, s, _), r in sorted(self.resources.items()) if (c, p, s) == (collection.name, project, scope)
                 and test(r)]
        return {"kind": collection.kind + "List", "id": f"projects/{project}/{scope}/{collection.name}",
                "items": items, "selfLink": self._link(project, scope, collection.name)}

    def _aggregated(self, collection: Collection, project: str, query: dict[str, str]) -> dict:
        test = parse_filter(query.get("filter", ""))
        scoped: dict[str, dict] = {}
        for (c, p, s, _), r in sorted(self.resources.items()):
            if c == collection.name and p == project and test(r):
                scoped.setdefault(s, {collection.name: []})[collection.name].append(r)
        return {"kind": collection.kind + "AggregatedList", "id": f"projects/{project}/aggregated/{collection.name}",
                "items": scoped, "selfLink": self._link(project, "aggregated", collection.name)}

    def _insert(self, collection: Collection, project: str, scope: str, body: dict, op_error: str,
                op_message: str) -> dict:
        name = body.get("name")
        if not name or not re.fullmatch(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?", name):
            raise Rejected(400, f"Invalid value for field 'resource.name': '{name}'. Must be a match of regex "
                           "'(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'")
        key = (collection.name, project, scope, name)
        if key in self.resources:
            raise Rejected(409, f"The resource 'projects/{project}/{scope}/{collection.name}/{name}' already exists",
                           "alreadyExists")
        for label, value in body.get("labels", {}).items():
            if not _LABEL_KEY.fullmatch(label) or not _LABEL_VALUE.fullmatch(value):
                raise Rejected(400, f"Invalid value for field 'resource.labels': '{label}={value}'")
        if collection.name == "instances":
            self._check_instance(project, scope, body)
        if collection.name == "firewalls" and not body.get("allowed") and not body.get("denied"):
            raise Rejected(400, "Invalid value for field 'resource': a firewall needs allowed or denied rules")
        made = self._fill(collection, project, scope, body, collection.creating)
        if collection.name == "instances":
            made.setdefault("metadata", {})["fingerprint"] = _fingerprint()
        if collection.name == "addresses":
            made["address"] = body.get("address") or self.external_ip
            made.setdefault("addressType", "EXTERNAL")
        self.resources[key] = made

        def commit() -> None:
            if collection.ready:
                made["status"] = collection.ready
            if collection.name == "instances":
                self._attach(project, scope, made)

        def undo() -> None:
            self.resources.pop(key, None)

        return self._operation("insert", project, scope, made["selfLink"], commit, undo, op_error, op_message)

    def _check_instance(self, project: str, zone: str, body: dict) -> None:
        region = zone.split("/")[1].rsplit("-", 1)[0]
        if not body.get("disks"):
            raise Rejected(400, "Invalid value for field 'resource.disks': an instance needs a boot disk")
        for disk in body["disks"]:
            source = disk.get("source")
            if source:
                name = source.rsplit("/", 1)[1]
                found = self.resources.get(("disks", project, zone, name))
                if found is None or not source.endswith(f"{zone}/disks/{name}"):
                    raise Rejected(404, f"The resource '{source}' was not found", "notFound")
                if found.get("users"):
                    raise Rejected(400, f"The disk resource '{source}' is already being used by "
                                   f"'{found['users'][0]}'", "resourceInUseByAnotherResource")
            elif not disk.get("initializeParams"):
                raise Rejected(400, "Invalid value for field 'resource.disks': a disk needs source or initializeParams")
        for nic in body.get("networkInterfaces", []):
            for config in nic.get("accessConfigs", []):
                ip = config.get("natIP")
                if not ip:
                    continue
                owners = [r for (c, p, s, _), r in self.resources.items()
                          if c == "addresses" and p == project and s == f"regions/{region}" and r.get("address") == ip]
                if not owners:
                    raise Rejected(400, f"Invalid value for field 'resource.networkInterfaces[0].accessConfigs[0].natIP': "
                                   f"'{ip}'. The specified external IP address '{ip}' was not found in region '{region}'.")
                if owners[0].get("users"):
                    raise Rejected(400, f"The IP address '{ip}' is already being used by another resource.",
                                   "resourceInUseByAnotherResource")

    def _attach(self, project: str, zone: str, instance: dict) -> None:
        """The instance running: its disks and address in use by it, its SSH keys in place."""
        region = zone.split("/")[1].rsplit("-", 1)[0]
        link = instance["selfLink"]
        for disk in instance["disks"]:
            params = disk.get("initializeParams")
            if params is not None and not disk.get("source"):
                # The boot disk is made with the instance, named after it unless told.
                boot = self._fill(COLLECTIONS["disks"], project, zone, {
                    "name": params.get("diskName") or instance["name"], "sizeGb": params.get("diskSizeGb", "10"),
                    "sourceImage": params.get("sourceImage", ""), "labels": dict(params.get("labels", {}))}, "READY")
                boot["users"] = [link]
                self.resources[("disks", project, zone, boot["name"])] = boot
                disk["source"] = boot["selfLink"]
            if disk.get("source"):
                found = self.resources.get(("disks", project, zone, disk["source"].rsplit("/", 1)[1]))
                if found is not None:
                    found["users"] = [link]
        for nic in instance.get("networkInterfaces", []):
            nic.setdefault("networkIP", "10.128.0.2")
            for config in nic.get("accessConfigs", []):
                config.setdefault("natIP", self.external_ip)
                for (c, p, s, _), r in self.resources.items():
                    if c == "addresses" and p == project and s == f"regions/{region}" and r.get("address") == config["natIP"]:
                        r["users"], r["status"] = [link], "IN_USE"
        self._grant_keys(instance)

    def _grant_keys(self, instance: dict) -> None:
        """The guest environment: the ssh-keys of the metadata in authorized_keys."""
        link = instance["selfLink"]
        self._revoke_keys(link)
        keys = [item.get("value", "") for item in instance.get("metadata", {}).get("items", []) if item.get("key") == "ssh-keys"]
        lines = [line.split(":", 1)[1].strip() for text in keys for line in text.splitlines() if ":" in line]
        if self.authorized_keys is not None and lines:
            with self.authorized_keys.open("a") as handle:
                handle.writelines(line + "\n" for line in lines)
            self._granted_keys[link] = lines

    def _revoke_keys(self, link: str) -> None:
        granted = self._granted_keys.pop(link, [])
        if granted and self.authorized_keys is not None and self.authorized_keys.exists():
            kept = [line for line in self.authorized_keys.read_text().splitlines() if line not in granted]
            self.authorized_keys.write_text("".join(line + "\n" for line in kept))

    def _running(self, project: str, zone: str, name: str) -> dict:
        found = self._get(COLLECTIONS["instances"], project, zone, name)
        if found.get("status") != "RUNNING":
            raise Rejected(400, f"The resource '{found['selfLink']}' is not ready", "resourceNotReady")
        return found

    def _set_metadata(self, project: str, zone: str, name: str, body: dict) -> dict:
        found = self._get(COLLECTIONS["instances"], project, zone, name)
        current = found.get("metadata", {}).get("fingerprint")
        if body.get("fingerprint") != current:
            raise Rejected(412, "Supplied fingerprint does not match current metadata fingerprint.", "conditionNotMet")

        def commit() -> None:
            found["metadata"] = {"kind": "compute#metadata", "items": list(body.get("items", [])),
                                 "fingerprint": _fingerprint()}
            if found.get("status") == "RUNNING":
                self._grant_keys(found)

        return self._operation("setMetadata", project, zone, found["selfLink"], commit, lambda: None, "", "")

    def _serial_port(self, project: str, zone: str, name: str, query: dict[str, str]) -> dict:
        found = self._running(project, zone, name)
        port = int(query.get("port", "1"))
        if not 1 <= port <= 4:
            raise Rejected(400, f"Invalid value for field 'port': '{port}'. Must be between 1 and 4.")
        lines = [f"Booting `Debian GNU/Linux' ({name})", "[    0.000000] Linux version 6.1.0-cloud-amd64"]
        if port == 1 and self.serial:
            lines += ["-----BEGIN SSH HOST KEY KEYS-----", *self.host_keys, "-----END SSH HOST KEY KEYS-----"]
        lines.append(f"Debian GNU/Linux 12 {name} ttyS0")
        contents = "".join(line + "\n" for line in lines) if port == 1 else ""
        start = int(query.get("start", "0"))
        return {"kind": "compute#serialPortOutput", "contents": contents[start:], "start": str(start),
                "next": str(len(contents)), "selfLink": found["selfLink"] + f"/serialPort?port={port}"}

    def _guest_attributes(self, project: str, zone: str, name: str, query: dict[str, str]) -> dict:
        found = self._running(project, zone, name)
        items = {i.get("key"): i.get("value") for i in found.get("metadata", {}).get("items", [])}
        path = query.get("queryPath", "")
        entries = [{"namespace": "hostkeys", "key": line.split()[0], "value": line.split()[1]}
                   for line in self.host_keys]
        enabled = self.guest_attributes and str(items.get("enable-guest-attributes", "")).upper() == "TRUE"
        if not enabled or not path or not entries:
            raise Rejected(404, f"The resource '{found['selfLink']}/guestAttributes/{path}' was not found", "notFound")
        chosen = [e for e in entries if f"{e['namespace']}/{e['key']}".startswith(path)]
        if not chosen:
            raise Rejected(404, f"The resource '{found['selfLink']}/guestAttributes/{path}' was not found", "notFound")
        return {"kind": "compute#guestAttributes", "queryPath": path, "queryValue": {"items": chosen},
                "selfLink": found["selfLink"] + f"/guestAttributes/{path}"}

    def _detach(self, instance: dict) -> None:
        link = instance["selfLink"]
        for disk in instance["disks"]:
            if disk.get("autoDelete") and disk.get("source"):
                # .../projects/<project>/zones/<zone>/disks/<name>
                project, _, zone, _, name = disk["source"].split("/projects/", 1)[1].split("/")
                self.resources.pop(("disks", project, f"zones/{zone}", name), None)
        for (c, *_), r in self.resources.items():
            if c in ("disks", "addresses") and r.get("users") == [link]:
                r.pop("users")
                if c == "addresses":
                    r["status"] = "RESERVED"
        self._revoke_keys(link)

    def _forget(self, collection: str, project: str, scope: str, name: str) -> None:
        found = self.resources.pop((collection, project, scope, name), None)
        if found is not None and collection == "instances":
            self._detach(found)

    def _delete(self, collection: Collection, project: str, scope: str, name: str, op_error: str, op_message: str) -> dict:
        found = self._get(collection, project, scope, name)
        if found.get("users"):
            raise Rejected(400, f"The {collection.name[:-1]} resource '{found['selfLink']}' is already being used by "
                           f"'{found['users'][0]}'", "resourceInUseByAnotherResource")
        if collection.deleting:
            found["status"] = collection.deleting
        status = found.get("status")

        def commit() -> None:
            self._forget(collection.name, project, scope, name)

        def undo() -> None:
            if status is not None:
                found["status"] = collection.ready

        return self._operation("delete", project, scope, found["selfLink"], commit, undo, op_error, op_message)

    def _patch(self, collection: Collection, project: str, scope: str, name: str, body: dict) -> dict:
        found = self._get(collection, project, scope, name)
        if body.get("name", name) != name:
            raise Rejected(400, "Invalid value for field 'resource.name': a patch cannot rename")
        changes = {k: v for k, v in body.items() if k not in ("kind", "id", "selfLink", "creationTimestamp")}

        def commit() -> None:
            found.update(changes)

        return self._operation("patch", project, scope, found["selfLink"], commit, lambda: None, "", "")

    # Operations -----------------------------------------------------------------------

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


def _fingerprint() -> str:
    """A metadata fingerprint (the API's: 8 bytes, base64), new with every change."""
    return base64.b64encode(os.urandom(8)).decode()


@functools.cache
def _discovery() -> Discovery:
    return Discovery(discovery_document())


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
