"""A cluster's folder, its cluster.json and its state.json: what exists, recorded
before each action.

    $KUBEMARK_UP_HOME/<name>/
        cluster.json          who the cluster is: name, uid, provider, settings (written once)
        state.json            what start made and how far it got, written atomically, 0600
        kubeconfig.kubemark   admin kubeconfig
        pki/                  keys and certificates (0700)
        pki/kubeconfigs/      the components' and hollow nodes' kubeconfigs
        run/                  runtime files: etcd data, rendered manifests, start script
        logs/                 one log per component and per hollow-node process

Every later command (status, stop, logs, pod-for-node) works from these two files
alone. They are apart so that a damaged state.json still leaves stop knowing which
provider, settings and marker to sweep with.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from kubemark_up import __version__
from kubemark_up.errors import ConfigError, KubemarkUpError, NotFoundError

SCHEMA_VERSION = 2


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class ClusterInfo(BaseModel):
    """cluster.json: written once, before start creates anything."""

    schema_version: int = SCHEMA_VERSION
    tool_version: str = __version__
    name: str
    # Random per start: marks every process and remote folder of this very cluster,
    # so that two machines with the same home path never take each other's.
    uid: str = Field(default_factory=lambda: secrets.token_hex(8))
    provider: str
    created_at: str = Field(default_factory=_now)
    settings: dict[str, Any]


class ProcessRecord(BaseModel):
    """One process we start, keyed by its instance name (kube-apiserver, hollow-node-3.kubelet)."""

    name: str
    role: Literal["master", "kubelet", "proxy", "fleet"]
    node: str | None = None
    argv: list[str]
    log: str  # a path on the host that runs it
    # Filled in once it runs. The start time tells our process from a later one with its PID.
    pid: int | None = None
    start: int | None = None


class Resource(BaseModel):
    """Anything else start makes (a folder on a host, a cloud disk, an object in a root
    cluster), recorded as planned before it is asked for and marked created after;
    the step that made it undoes it."""

    kind: str  # "folder", "gce-address", "k8s-object", ...
    id: str  # unique within its kind: a path, a resource name, namespace/name
    step: str
    status: Literal["planned", "created"] = "planned"
    details: dict[str, Any] = {}


class MasterRecord(BaseModel):
    """Where the master is: the host it runs on, the addresses clients reach it at, and
    where its files are there."""

    host: str
    addresses: list[str]
    bind_address: str
    paths: dict[str, str]


class ClusterState(BaseModel):
    schema_version: int = SCHEMA_VERSION
    tool_version: str = __version__
    phase: Literal["starting", "running", "failed", "stopping"] = "starting"
    # Step name -> "started" | "done", in the order the steps ran.
    steps: dict[str, str] = {}
    # Step name -> seconds it took.
    timings: dict[str, float] = {}
    ports: dict[str, int] = {}
    endpoint: str | None = None
    master: MasterRecord | None = None
    binaries: dict[str, str] = {}
    nodes: list[str] = []
    nodes_ready: int | None = None  # how many were Ready when start finished
    # The hollow-node image of pods on a root cluster: reference, digest, what the pods run.
    image: dict[str, str | None] = {}
    processes: dict[str, ProcessRecord] = {}
    resources: list[Resource] = []
    # SSH host keys by "user@host:port", pinned on first contact and required ever after.
    host_keys: dict[str, str] = {}

    def resource(self, kind: str, id: str) -> Resource | None:
        return next((r for r in self.resources if r.kind == kind and r.id == id), None)


class ClusterDir:
    """The paths of one cluster, decided once here and read by everyone else."""

    def __init__(self, home: Path, name: str) -> None:
        self.home = home
        self.name = name
        self.root = home / name

    state_file = property(lambda self: self.root / "state.json")
    info_file = property(lambda self: self.root / "cluster.json")
    kubeconfig = property(lambda self: self.root / "kubeconfig.kubemark")
    pki = property(lambda self: self.root / "pki")
    run = property(lambda self: self.root / "run")
    logs = property(lambda self: self.root / "logs")
    kubeconfigs = property(lambda self: self.root / "pki" / "kubeconfigs")

    def node_kubeconfig(self, node: str) -> Path:
        return self.kubeconfigs / "nodes" / f"{node}.kubeconfig"

    def component_kubeconfig(self, component: str) -> Path:
        return self.kubeconfigs / f"{component}.kubeconfig"

    def marker(self, uid: str | None) -> str:
        """Set as KUBEMARK_UP_CLUSTER on every master process we start, so that `stop`
        finds even a process started in the instant before its PID reached state.json.
        Without the uid (cluster.json lost), the bare folder: a marker matches all that
        lie beneath it (agent.find_marked), so this finds every run of this name."""
        return f"{self.root}#{uid}" if uid else str(self.root)

    def node_marker(self, uid: str | None) -> str:
        """The hollow nodes' marker: apart from the master's, and, without the uid, one
        that still finds the hollow nodes of every run of this name."""
        return f"{self.root}#hollow#{uid}" if uid else f"{self.root}#hollow"

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """One kubemark-up command at a time per cluster: a second one is refused."""
        busy = f"another kubemark-up command is working on cluster '{self.name}'; wait for it to finish"
        return _flock(self.home / f".{self.name}.lock", refuse=busy)

    def lock_ports(self) -> contextlib.AbstractContextManager[None]:
        """Held while picking ports and recording them, so two clusters starting at once
        in one home never pick the same ones (a second one waits)."""
        return _flock(self.home / ".ports.lock", refuse=None)

    def claimed_ports(self) -> set[int]:
        """Ports other clusters in this home have recorded, bound or about to be."""
        claimed: set[int] = set()
        for other in self.home.glob("*/state.json"):
            if other.parent == self.root:
                continue
            try:
                claimed.update(int(p) for p in json.loads(other.read_text()).get("ports", {}).values())
            except (OSError, ValueError, TypeError, AttributeError):
                continue
        return claimed

    def exists(self) -> bool:
        return self.state_file.exists() or self.info_file.exists()

    def ensure(self) -> None:
        # The home folder may be the user's own (or shared): made 0700 if new, else left
        # as it is. The cluster's folders are ours, and only their owner may enter them.
        try:
            self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
            for folder in (self.root, self.pki, self.run, self.logs):
                folder.mkdir(mode=0o700, exist_ok=True)
                os.chmod(folder, 0o700)
        except OSError as exc:
            raise ConfigError(
                f"cannot make the cluster folder {self.root} ({exc.strerror}): set KUBEMARK_UP_HOME to a folder you can write"
            ) from None

    def load(self) -> ClusterState:
        data = self._read(self.state_file)
        try:
            return ClusterState.model_validate(data)
        except ValidationError as exc:
            raise KubemarkUpError(f"{self.state_file} is damaged: {exc.errors()[0]['msg']}") from None

    def load_info(self) -> ClusterInfo:
        data = self._read(self.info_file)
        try:
            return ClusterInfo.model_validate(data)
        except ValidationError as exc:
            raise KubemarkUpError(f"{self.info_file} is damaged: {exc.errors()[0]['msg']}") from None

    def _read(self, path: Path) -> dict:
        try:
            raw = path.read_text()
        except FileNotFoundError:
            raise NotFoundError(
                f"no cluster named '{self.name}' in {self.home} (start one with: kubemark-up start --name {self.name})"
            ) from None
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise KubemarkUpError(f"{path} is not valid JSON ({exc})") from None
        if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
            version = data.get("schema_version") if isinstance(data, dict) else None
            raise KubemarkUpError(f"{path} has schema version {version}, this kubemark-up reads {SCHEMA_VERSION}")
        return data

    def save(self, state: ClusterState) -> None:
        self._write(self.state_file, state)

    def save_info(self, info: ClusterInfo) -> None:
        self._write(self.info_file, info)

    def _write(self, path: Path, model: BaseModel) -> None:
        """Write atomically: a 0600 temp file in the same folder, then rename."""
        self.ensure()
        fd, tmp = tempfile.mkstemp(prefix=".state.", dir=self.root)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(model.model_dump_json(indent=1))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def archive_logs(self) -> Path | None:
        """Move the logs a previous run kept to logs-<time of its last write>, so that a
        new start writes fresh logs and the old ones stay readable."""
        try:
            newest = max((p.stat().st_mtime for p in self.logs.iterdir()), default=None)
        except FileNotFoundError:
            return None
        if newest is None:
            return None
        stamp = dt.datetime.fromtimestamp(newest, dt.UTC).strftime("%Y%m%d-%H%M%S")
        target = self.root / f"logs-{stamp}"
        suffix = 0
        while target.exists():
            suffix += 1
            target = self.root / f"logs-{stamp}.{suffix}"
        self.logs.rename(target)
        return target

    def remove_runtime(self, *, purge: bool) -> None:
        """Remove everything but the logs, or everything with purge."""
        if purge:
            shutil.rmtree(self.root, ignore_errors=True)
            return
        for child in (self.pki, self.run):
            shutil.rmtree(child, ignore_errors=True)
        for path in (self.kubeconfig, self.state_file, self.info_file):
            path.unlink(missing_ok=True)
        for stray in self.root.glob(".state.*"):
            stray.unlink(missing_ok=True)


@contextlib.contextmanager
def _flock(path: Path, *, refuse: str | None) -> Iterator[None]:
    """An exclusive lock on path: refused with that message if taken, else waited for."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        handle = path.open("a")
    except OSError as exc:
        raise ConfigError(
            f"cannot use {path.parent} ({exc.strerror}): set KUBEMARK_UP_HOME to a folder you can write"
        ) from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (fcntl.LOCK_NB if refuse else 0))
        except BlockingIOError:
            raise KubemarkUpError(refuse or "locked") from None
        yield
