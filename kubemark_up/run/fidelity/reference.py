"""reference.yaml: what one real node sends and holds, per row measured on a real node
or derived from the sources (`basis`). Read into pydantic models so that a row with a
missing or mistyped figure is refused with its place in the file, not counted as 0.

Keys are spelled as the fidelity tables spell them: verbs as the HTTP method the
request is (PUT, PATCH, POST, WATCH; an audit verb such as `create` is taken too),
resources as group/resource (resource alone for the core group)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from kubemark_up.errors import ConfigError

Basis = Literal["measured", "derived"]
Key = tuple[str, str, str, str]  # component, verb, resource, subresource

# The audit log's verbs, as the requests they are.
VERBS = {"get": "GET", "list": "LIST", "watch": "WATCH", "create": "POST", "update": "PUT", "patch": "PATCH",
         "delete": "DELETE", "deletecollection": "DELETECOLLECTION"}


def http_verb(verb: str) -> str:
    return VERBS.get(verb.lower(), verb.upper())


Verb = Annotated[str, AfterValidator(http_verb)]


class _Row(BaseModel):
    # A field the schema does not name is left alone: the generator may stamp more.
    model_config = ConfigDict(extra="ignore")

    component: str
    basis: Basis = "derived"  # the first reference was derived from code: rows without a basis are


class RequestRow(_Row):
    verb: Verb
    resource: str
    subresource: str = ""
    rate: float = Field(ge=0)  # per node and minute, at rest

    @property
    def key(self) -> Key:
        return (self.component, self.verb, self.resource, self.subresource or "")


class WatchRow(_Row):
    resource: str
    open: int = Field(ge=0)  # per node


class ConnectionRow(_Row):
    open: int = Field(ge=0)  # TCP connections per node to the apiserver


class LifecycleRow(_Row):
    verb: Verb
    resource: str
    subresource: str = ""
    per_pod: float = Field(ge=0)

    @property
    def key(self) -> Key:
        return (self.component, self.verb, self.resource, self.subresource or "")


class Timing(BaseModel):
    model_config = ConfigDict(extra="ignore")

    bound_to_running_p50: float | None = None
    bound_to_running_p99: float | None = None
    unit: Literal["s", "ms"] = "s"

    def seconds(self, value: float | None) -> float | None:
        return None if value is None else value / 1000 if self.unit == "ms" else value


class Lifecycle(BaseModel):
    model_config = ConfigDict(extra="ignore")

    pod: str = ""  # what the measured pod was (its volumes, its containers)
    pods: int = 0  # how many lifecycles were measured
    requests: list[LifecycleRow] = []
    timing: Timing | None = None


class Measured(BaseModel):
    """Where and how a measured reference was made."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    kubernetes: str | None = None
    node_problem_detector: str | None = Field(None, alias="node-problem-detector")
    containerd: str | None = None
    runc: str | None = None
    date: dt.date | str | None = None
    command: str | None = None
    minutes: float | None = None

    def stamp(self) -> str:
        parts = [f"Kubernetes {self.kubernetes}" if self.kubernetes else "",
                 f"node-problem-detector {self.node_problem_detector}" if self.node_problem_detector else "",
                 f"containerd {self.containerd}" if self.containerd else "",
                 f"runc {self.runc}" if self.runc else "",
                 f"{self.minutes:g} min" if self.minutes else "",
                 f"on {self.date}" if self.date else ""]
        return ", ".join(p for p in parts if p)


class Reference(BaseModel):
    model_config = ConfigDict(extra="ignore")

    source: str = ""
    measured: Measured | None = None
    requests: list[RequestRow] = []
    watches: list[WatchRow] = []
    connections: list[ConnectionRow] = []
    lifecycle: Lifecycle | None = None

    def describe(self) -> str:
        stamp = self.measured.stamp() if self.measured else ""
        return f"{self.source} (measured: {stamp})" if stamp else self.source


def load_reference(path: Path | None = None) -> Reference:
    """The packaged reference.yaml, or the file given."""
    path = path or Path(__file__).with_name("reference.yaml")
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read the fidelity reference {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"the fidelity reference {path} is not YAML: {exc}") from None
    try:
        return Reference.model_validate(data or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"the fidelity reference {path}: {where}: {first['msg']}") from None
