"""Compute Engine calls for the gce provider, through google-cloud-compute (REST).

One place that talks to the API: the clients (Application Default Credentials, or
none against KUBEMARK_UP_GCE_ENDPOINT, the test endpoint), the client's own retry
with back-off for transient errors (the API's 429 and 5xx, and the transport's: a
refused or dropped connection), waiting on operations (Operations.wait: the server
holds the call until the operation is done, so a wait costs few calls), and the
translation of the API's errors into one line each: a missing permission named (its
IAM name), quota, an unreachable API, "already exists", "not found" and "forbidden"
as their own exceptions for the caller.
"""

from __future__ import annotations

import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import requests
from google.api_core import exceptions as gexc
from google.api_core import retry as gretry
from google.auth import exceptions as auth_exc

# google.cloud.compute_v1 takes about a second to import, so it is imported where a
# request or body is built (here, resources.py, sshkeys.py): a command that stops
# at a settings error does not wait for it.
from kubemark_up.errors import ConfigError, KubemarkUpError

ENDPOINT_ENV = "KUBEMARK_UP_GCE_ENDPOINT"  # tests only: a local Compute endpoint, no credentials
DEFAULT_ENDPOINT = "https://compute.googleapis.com"
SCOPES = ["https://www.googleapis.com/auth/compute"]

# What the transport raises when the API cannot be reached or the connection drops:
# the REST transport's requests errors (not subclasses of the built-in
# ConnectionError), and google-auth's when a token refresh cannot reach its server.
_UNREACHABLE: tuple[type[Exception], ...] = (
    requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError, auth_exc.TransportError,
)
# What the API may fail for a moment; an insert retried carries the same requestId,
# so the server does it once.
_TRANSIENT = gretry.if_exception_type(
    gexc.TooManyRequests, gexc.InternalServerError, gexc.BadGateway, gexc.ServiceUnavailable, gexc.GatewayTimeout,
    *_UNREACHABLE,
)

# The IAM permission a method needs, for the error when the API does not name it: the
# REST method's verb, with the ones IAM names otherwise (Python's method names are
# snake_case: get_guest_attributes is compute.instances.getGuestAttributes).
_VERBS = {"insert": "create", "patch": "update", "aggregated_list": "list", "wait": "get"}


class GCEError(KubemarkUpError):
    """A Compute call failed; the message is one line."""


class NotFound(GCEError):
    pass


class AlreadyExists(GCEError):
    pass


class Forbidden(GCEError):
    """The credentials lack a permission (named in the message)."""


class Unreachable(GCEError):
    """The API could not be reached within the retry budget."""


@dataclass(frozen=True)
class Scope:
    """Where a resource lives: a zone, a region, or global."""

    kind: str  # "zone", "region" or "global"
    name: str = ""

    @property
    def path(self) -> str:
        return "global" if self.kind == "global" else f"{self.kind}s/{self.name}"


def _credentials(endpoint: str | None) -> Any:
    if endpoint:
        from google.auth.credentials import AnonymousCredentials

        return AnonymousCredentials()
    import google.auth

    try:
        credentials, _ = google.auth.default(scopes=SCOPES)
    except auth_exc.DefaultCredentialsError:
        raise ConfigError(
            "no Google credentials found: run `gcloud auth application-default login`, or set "
            "GOOGLE_APPLICATION_CREDENTIALS to a service account key file (Application Default Credentials)"
        ) from None
    return credentials


class Compute:
    """The clients of one project, made on first use."""

    def __init__(self, project: str, *, operation_timeout: float = 600.0, retry_timeout: float = 120.0) -> None:
        self.project = project
        self.operation_timeout = operation_timeout
        self.endpoint = os.environ.get(ENDPOINT_ENV) or None
        # Transient errors are retried with back-off for up to retry_timeout seconds.
        self.retry = gretry.Retry(predicate=_TRANSIENT, initial=0.5, maximum=10.0, multiplier=2.0,
                                  timeout=retry_timeout)
        self._clients: dict[str, Any] = {}
        self._credentials: Any = None
        self.calls = 0  # API requests made (retries not counted)

    def client(self, kind: str) -> Any:
        from google.cloud import compute_v1
        if kind not in self._clients:
            if self._credentials is None:
                self._credentials = _credentials(self.endpoint)
            options = {"api_endpoint": self.endpoint} if self.endpoint else None
            cls = getattr(compute_v1, f"{kind}Client")
            self._clients[kind] = cls(transport="rest", credentials=self._credentials, client_options=options)
        return self._clients[kind]

    def check_credentials(self) -> None:
        """Fail now, before anything is made, when there are none."""
        if self._credentials is None:
            self._credentials = _credentials(self.endpoint)

    def call(self, kind: str, method: str, what: str, **request: Any) -> Any:
        """client(kind).method(**request), retried while transient, errors translated."""
        self.calls += 1
        try:
            return getattr(self.client(kind), method)(**request, retry=self.retry, timeout=60.0)
        except gexc.GoogleAPICallError as exc:
            raise _translate(exc, what, kind, method) from None
        except gexc.RetryError as exc:
            raise self._gave_up(what, exc.cause, kind, method) from None
        except _UNREACHABLE as exc:  # not retried (a page after the first): said as one line all the same
            raise self._gave_up(what, exc, kind, method) from None

    def _gave_up(self, what: str, cause: BaseException | None, kind: str, method: str) -> GCEError:
        if isinstance(cause, _UNREACHABLE):
            return Unreachable(f"cannot reach the Compute API at {self.endpoint or DEFAULT_ENDPOINT}: "
                               f"{transport_reason(cause)} ({what}; retried for {self.retry.timeout:.0f}s)")
        if isinstance(cause, gexc.GoogleAPICallError):
            last = _translate(cause, what, kind, method)
            return GCEError(f"{last.message}; the Compute API kept failing for {self.retry.timeout:.0f}s")
        return GCEError(f"{what}: the Compute API kept failing for {self.retry.timeout:.0f}s ({cause})")

    def wait(self, operation: Any, scope: Scope, what: str) -> None:
        """Wait for an operation to be DONE; its error as one line."""
        from google.cloud import compute_v1
        deadline = time.monotonic() + self.operation_timeout
        name = operation.name
        while operation.status != compute_v1.Operation.Status.DONE:
            if time.monotonic() > deadline:
                raise GCEError(f"{what}: operation {name} not done after {self.operation_timeout:.0f}s")
            kind, where = {"zone": ("ZoneOperations", {"zone": scope.name}),
                           "region": ("RegionOperations", {"region": scope.name}),
                           "global": ("GlobalOperations", {})}[scope.kind]
            operation = self.call(kind, "wait", f"{what} (waiting for {name})", project=self.project, operation=name,
                                  **where)
        if operation.error and operation.error.errors:
            first = operation.error.errors[0]
            raise _operation_error(what, first.code, first.message)

    def insert(self, kind: str, scope: Scope, what: str, body_field: str, body: Any, request_id: str) -> None:
        """Insert and wait: what exists is known when this returns."""
        where = _where(scope)
        operation = self.call(kind, "insert", what, request={"project": self.project, **where, body_field: body,
                                                            "request_id": request_id})
        self.wait(operation, scope, what)

    def delete(self, kind: str, scope: Scope, what: str, **name: str) -> None:
        """Delete and wait; NotFound when it is not there."""
        operation = self.call(kind, "delete", what, project=self.project, **_where(scope), **name)
        self.wait(operation, scope, what)

    def update(self, kind: str, scope: Scope, what: str, **request: Any) -> None:
        """Patch a resource and wait."""
        operation = self.call(kind, "patch", what, project=self.project, **_where(scope), **request)
        self.wait(operation, scope, what)

    def get(self, kind: str, scope: Scope, what: str, **name: str) -> Any:
        return self.call(kind, "get", what, project=self.project, **_where(scope), **name)

    def labelled(self, kind: str, what: str, filter: str) -> Iterator[tuple[Scope, Any]]:
        """Every resource of kind in the project that filter matches: an aggregated list
        (all zones or regions at once), or the global list for firewalls."""
        from google.cloud import compute_v1
        if kind == "Firewalls":
            request = compute_v1.ListFirewallsRequest(project=self.project, filter=filter)
            for item in self.call(kind, "list", what, request=request):
                yield Scope("global"), item
            return
        request_type = getattr(compute_v1, f"AggregatedList{kind}Request")
        request = request_type(project=self.project, filter=filter)
        field = {"Disks": "disks", "Instances": "instances", "Addresses": "addresses"}[kind]
        pager = self.call(kind, "aggregated_list", what, request=request)
        try:
            for scope_path, scoped in pager:
                for item in getattr(scoped, field):
                    kind_name, _, name = scope_path.partition("/")
                    yield Scope(kind_name.rstrip("s"), name), item
        except gexc.GoogleAPICallError as exc:  # a later page
            raise _translate(exc, what, kind, "aggregated_list") from None
        except gexc.RetryError as exc:
            raise self._gave_up(what, exc.cause, kind, "aggregated_list") from None
        except _UNREACHABLE as exc:
            raise self._gave_up(what, exc, kind, "aggregated_list") from None


def _where(scope: Scope) -> dict[str, str]:
    return {scope.kind: scope.name} if scope.kind != "global" else {}


def new_request_id() -> str:
    return str(uuid.uuid4())


_PERMISSION = re.compile(r"Required '([\w.]+)' permission")


def _translate(exc: gexc.GoogleAPICallError, what: str, kind: str, method: str) -> GCEError:
    message = (exc.message or str(exc)).splitlines()[0] if (exc.message or str(exc)) else type(exc).__name__
    if isinstance(exc, gexc.NotFound):
        return NotFound(f"{what}: not found ({message})")
    if isinstance(exc, gexc.Conflict):
        return AlreadyExists(f"{what}: already exists ({message})")
    if isinstance(exc, gexc.Unauthenticated):
        return GCEError(f"{what}: the credentials were refused ({message}); renew them with "
                        "`gcloud auth application-default login`")
    if isinstance(exc, gexc.Forbidden | gexc.PermissionDenied):
        if "quota" in message.lower():
            return GCEError(f"{what}: quota exceeded ({message})")
        found = _PERMISSION.search(message)
        return Forbidden(f"{what}: the credentials lack the permission "
                         f"{found[1] if found else permission(kind, method)} ({message})")
    if isinstance(exc, gexc.TooManyRequests):
        return GCEError(f"{what}: rate limit or quota exceeded ({message})")
    return GCEError(f"{what}: {exc.code} {message}")


def permission(kind: str, method: str) -> str:
    """The IAM permission client kind's method needs: Instances.get_guest_attributes ->
    compute.instances.getGuestAttributes, Disks.insert -> compute.disks.create."""
    resource = kind[0].lower() + kind[1:]  # ZoneOperations -> zoneOperations
    verb = _VERBS.get(method) or re.sub(r"_([a-z])", lambda m: m[1].upper(), method)
    return f"compute.{resource}.{verb}"


def transport_reason(exc: BaseException) -> str:
    """What went wrong on the way to the API, in a few words: the innermost OS error of
    the chain (connection refused, name not resolved), else the exception's own words."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    for inner in reversed(seen):
        if isinstance(inner, ConnectionRefusedError):
            return "connection refused"
        if isinstance(inner, socket.gaierror):
            return "the name does not resolve"
        if isinstance(inner, ConnectionResetError):
            return "connection reset"
        if isinstance(inner, TimeoutError):
            return "timed out"
        if isinstance(inner, OSError) and inner.strerror:
            return inner.strerror[0].lower() + inner.strerror[1:]
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text


def _operation_error(what: str, code: str, message: str) -> GCEError:
    if code in ("QUOTA_EXCEEDED", "RESOURCE_EXHAUSTED", "ZONE_RESOURCE_POOL_EXHAUSTED",
                "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS"):
        return GCEError(f"{what}: quota or capacity exceeded ({code}: {message})")
    if code == "RESOURCE_NOT_FOUND":
        return NotFound(f"{what}: not found ({message})")
    if code == "RESOURCE_ALREADY_EXISTS":
        return AlreadyExists(f"{what}: already exists ({message})")
    found = _PERMISSION.search(message)
    if found:
        return GCEError(f"{what}: the credentials lack the permission {found[1]} ({message})")
    return GCEError(f"{what}: the operation failed ({code}: {message})")


def retrying(fn: Callable[[], Any], *, on: type[Exception] | tuple[type[Exception], ...], timeout: float,
             initial: float = 1.0, maximum: float = 5.0) -> Any:
    """fn() again with back-off while it raises on, for up to timeout seconds; the last
    error then (api_core's retry, as for the API calls)."""
    last: list[Exception] = []

    def attempt() -> Any:
        try:
            return fn()
        except on as exc:
            last[:] = [exc]
            raise

    try:
        return gretry.Retry(predicate=gretry.if_exception_type(*(on if isinstance(on, tuple) else (on,))),
                            initial=initial, maximum=maximum, multiplier=1.5, timeout=timeout)(attempt)()
    except gexc.RetryError:
        raise last[0] from None
