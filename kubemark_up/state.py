"""A cluster's folder and its state.json: what exists, recorded before each action.

    $KUBEMARK_UP_HOME/<name>/
        state.json            this file's model, written atomically, 0600
        kubeconfig.kubemark   admin kubeconfig
        pki/                  keys and certificates (0700)
        pki/kubeconfigs/      the components' and hollow nodes' kubeconfigs
        run/                  runtime files: etcd data, per-node temp dirs
        logs/                 one log per component and per hollow-node process

Every later command (status, stop, pod-for-node) works from state alone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from kubemark_up import __version__
from kubemark_up.errors import KubemarkUpError, NotFoundError

SCHEMA_VERSION = 1


class ProcessRecord(BaseModel):
    """One process we start, keyed by its instance name (kube-apiserver, hollow-node-3.kubelet)."""

    name: str
    role: Literal["master", "kubelet", "proxy"]
    node: str | None = None
    argv: list[str]
    log: str
    # Filled in once it runs. The start time tells our process from a later one with its PID.
    pid: int | None = None
    create_time: float | None = None


class ClusterState(BaseModel):
    schema_version: int = SCHEMA_VERSION
    tool_version: str = __version__
    name: str
    provider: str
    phase: Literal["starting", "running", "failed", "stopping"] = "starting"
    created_at: str = Field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    settings: dict
    # Step name -> "started" | "done", in the order the steps ran.
    steps: dict[str, str] = {}
    # Step name -> seconds it took.
    timings: dict[str, float] = {}
    ports: dict[str, int] = {}
    endpoint: str | None = None
    binaries: dict[str, str] = {}
    nodes: list[str] = []
    processes: dict[str, ProcessRecord] = {}


class ClusterDir:
    """The paths of one cluster, decided once here and read by everyone else."""

    def __init__(self, home: Path, name: str) -> None:
        self.home = home
        self.name = name
        self.root = home / name

    state_file = property(lambda self: self.root / "state.json")
    kubeconfig = property(lambda self: self.root / "kubeconfig.kubemark")
    pki = property(lambda self: self.root / "pki")
    run = property(lambda self: self.root / "run")
    logs = property(lambda self: self.root / "logs")
    kubeconfigs = property(lambda self: self.root / "pki" / "kubeconfigs")

    def node_kubeconfig(self, node: str) -> Path:
        return self.kubeconfigs / "nodes" / f"{node}.kubeconfig"

    def component_kubeconfig(self, component: str) -> Path:
        return self.kubeconfigs / f"{component}.kubeconfig"

    @property
    def marker(self) -> str:
        """Set as KUBEMARK_UP_CLUSTER on every process we start, so that `stop` finds even
        a process started in the instant before its PID reached state.json."""
        return str(self.root)

    @property
    def node_marker(self) -> str:
        """The hollow nodes' marker: under marker, and apart from the master's."""
        return f"{self.marker}#hollow"

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
        return self.state_file.exists()

    def ensure(self) -> None:
        # The home folder may be the user's own (or shared): made 0700 if new, else left
        # as it is. The cluster's folders are ours, and only their owner may enter them.
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        for folder in (self.root, self.pki, self.run, self.logs):
            folder.mkdir(mode=0o700, exist_ok=True)
            os.chmod(folder, 0o700)

    def load(self) -> ClusterState:
        try:
            raw = self.state_file.read_text()
        except FileNotFoundError:
            raise NotFoundError(
                f"no cluster named '{self.name}' in {self.home} (start one with: kubemark-up start --name {self.name})"
            ) from None
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise KubemarkUpError(f"{self.state_file} is not valid JSON ({exc})") from None
        if data.get("schema_version") != SCHEMA_VERSION:
            raise KubemarkUpError(
                f"{self.state_file} has schema version {data.get('schema_version')}, "
                f"this kubemark-up reads {SCHEMA_VERSION}"
            )
        try:
            return ClusterState.model_validate(data)
        except ValidationError as exc:
            raise KubemarkUpError(f"{self.state_file} is damaged: {exc.errors()[0]['msg']}") from None

    def save(self, state: ClusterState) -> None:
        """Write state.json atomically: a 0600 temp file in the same folder, then rename."""
        self.ensure()
        fd, tmp = tempfile.mkstemp(prefix=".state.", dir=self.root)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(state.model_dump_json(indent=1))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.state_file)
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
        for path in (self.kubeconfig, self.state_file):
            path.unlink(missing_ok=True)
        for stray in self.root.glob(".state.*"):
            stray.unlink(missing_ok=True)


@contextlib.contextmanager
def _flock(path: Path, *, refuse: str | None) -> Iterator[None]:
    """An exclusive lock on path: refused with that message if taken, else waited for."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (fcntl.LOCK_NB if refuse else 0))
        except BlockingIOError:
            raise KubemarkUpError(refuse) from None
        yield
