"""Fakes of the three interfaces the engine is written against, for tests/unit: a
`Host` whose files and processes live in memory, a `NodeEngine` whose hollow nodes
are names in a list, and a `Provider` that puts the two together. What they did and
what they hold is kept in one `World`, which outlives the provider objects that
`start` and `stop` load, as a real machine outlives them.

The provider is registered as "fake" through the entry-point group, as a third
party's would be (see `register`), so tests drive the public `kubemark_up.cluster`
functions with it. kube-apiserver is the one process that is more than a record:
the engine probes it from this machine and lists Nodes through it, so spawning it
serves a small HTTPS endpoint on loopback (fake_apiserver.py) with the certificate
the cluster put on the fake host."""

from __future__ import annotations

import hashlib
import posixpath
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from kubemark_up import steps as steps_mod
from kubemark_up.config import ProviderSettings
from kubemark_up.context import Context
from kubemark_up.errors import KubemarkUpError
from kubemark_up.hosts import Completed, Host
from kubemark_up.master import MasterPaths
from kubemark_up.nodes.base import NodeEngine, NodeFailure, NodeLocation, NodeSite
from kubemark_up.providers import MasterSite, Provider
from kubemark_up.steps import Step
from tests.support.fake_apiserver import FakeApiserver

ROOT = "/srv/kubemark"  # where the fake host keeps the master's files


@dataclass
class FakeProcess:
    argv: list[str]
    log: str
    marker: str
    start: int
    alive: bool = True


@dataclass
class World:
    """The fake machine and what happened on it; tests set its switches between commands."""

    files: dict[str, tuple[bytes, int]] = field(default_factory=dict)  # path -> (content, mode)
    folders: set[str] = field(default_factory=set)
    processes: dict[int, FakeProcess] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)  # agent verbs, in order
    journal: list[str] = field(default_factory=list)  # "run pki", "undo etcd", "nodes start ..."
    # Switches: a step whose run raises, undos that return a problem, nodes that die.
    fail_step: str = ""
    fail_undo: set[str] = field(default_factory=set)
    failed_nodes: set[str] = field(default_factory=set)
    own_steps: bool = True  # the fake provider's own step ("fake-disk") among the shared ones
    only_own_steps: bool = False  # start made of fake steps alone (no certificates, no processes)
    ready_nodes: set[str] = field(default_factory=set)
    apiserver: FakeApiserver | None = None
    _next_pid: int = 1000

    def __post_init__(self) -> None:
        # Bound now and kept: the fake apiserver's port cannot be taken by anyone else.
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)

    @property
    def apiserver_port(self) -> int:
        return int(self.listener.getsockname()[1])

    def live(self) -> list[FakeProcess]:
        return [p for p in self.processes.values() if p.alive]

    def close(self) -> None:
        if self.apiserver is not None:
            self.apiserver.close()
        self.listener.close()

    def spawn(self, argv: list[str], log: str, marker: str) -> tuple[int, int]:
        self._next_pid += 1
        self.processes[self._next_pid] = FakeProcess(argv, log, marker, start=self._next_pid * 7)
        if argv[-1] == "kube-apiserver" and self.apiserver is None:
            pki_dir = posixpath.join(ROOT, "pki")
            cert, key = self.files[f"{pki_dir}/apiserver.crt"][0], self.files[f"{pki_dir}/apiserver.key"][0]
            self.apiserver = FakeApiserver(self.listener, cert, key, ready=lambda: sorted(self.ready_nodes))
        return self._next_pid, self._next_pid * 7


class FakeHost(Host):
    """A Host whose agent verbs act on the World: files in a dict, processes as records."""

    name = "fake-host"
    supervisor = f"{ROOT}/supervise.py"

    def __init__(self, world: World) -> None:
        self.world = world

    def call(self, verb: str, **arguments: Any) -> Any:
        self.world.calls.append(verb)
        handler = getattr(self, f"_verb_{verb}", None)
        if handler is None:  # a verb the engine started using: teach the fake, do not guess
            raise NotImplementedError(f"FakeHost has no agent verb {verb!r}")
        return handler(**arguments)

    def run(self, argv: Sequence[str], *, stdin: bytes = b"", timeout: float = 60) -> Completed:
        self.world.calls.append(f"run {argv[0]}")
        return Completed(list(argv), 127, "", f"{argv[0]}: not on the fake host")

    def put(self, path: str, source: bytes | Path, *, mode: int) -> None:
        content = source.read_bytes() if isinstance(source, Path) else bytes(source)
        self.world.files[path] = (content, mode)

    def get(self, path: str, local: Path) -> bool:
        if path not in self.world.files:
            return False
        local.write_bytes(self.world.files[path][0])
        return True

    # The agent's verbs (hosts/agent.py), with its argument names.

    def _find(self, handles: list[list[int]]) -> list[FakeProcess | None]:
        found = []
        for pid, start in handles:
            process = self.world.processes.get(pid)
            found.append(process if process and process.alive and process.start == start else None)
        return found

    def _verb_spawn(self, specs: list[dict]) -> list[list[int]]:
        return [list(self.world.spawn(spec["argv"], spec["log"], spec["marker"])) for spec in specs]

    def _verb_alive(self, handles: list[list[int]]) -> list[bool]:
        return [process is not None for process in self._find(handles)]

    def _verb_send(self, handles: list[list[int]], name: str) -> None:
        return None

    def _verb_stop(self, handles: list[list[int]], timeout: float) -> list[list[int]]:
        for process in self._find(handles):
            if process is not None:
                process.alive = False
        return []

    def _verb_find_marked(self, marker: str) -> list[list[int]]:
        return [[pid, p.start] for pid, p in self.world.processes.items()
                if p.alive and (p.marker == marker or p.marker.startswith(f"{marker}#"))]

    def _verb_cmdlines(self, handles: list[list[int]]) -> list[list[str] | None]:
        return [process.argv if process else None for process in self._find(handles)]

    def _verb_supervision(self, status_files: list[str]) -> list[dict | None]:
        return [None for _ in status_files]  # no restarts: nothing ever crashes here

    def _verb_free_ports(self, count: int, low: int, high: int, exclude: list[int]) -> list[int]:
        taken = set(exclude) | {self.world.apiserver_port}
        return [port for port in range(low, high + 1) if port not in taken][:count]

    def _verb_ports_in_use(self, ports: list[int]) -> list[bool]:
        return [False for _ in ports]

    def _verb_probe(self, urls: list[str], timeout: float) -> list[bool]:
        return [bool(self.world.live()) for _ in urls]

    def _verb_read(self, path: str, limit: int, from_end: bool) -> str:
        content = self.world.files.get(path, (b"", 0))[0]
        return (content[-limit:] if from_end else content[:limit]).decode()

    def _verb_mkdirs(self, paths: list[str], mode: int) -> list[bool]:
        made = [path not in self.world.folders for path in paths]
        self.world.folders.update(paths)
        return made

    def _verb_remove(self, paths: list[str]) -> None:
        for path in paths:
            for name in [f for f in self.world.files if f == path or f.startswith(f"{path}/")]:
                del self.world.files[name]
            self.world.folders -= {f for f in self.world.folders if f == path or f.startswith(f"{path}/")}

    def _verb_sha256(self, paths: list[str]) -> list[str | None]:
        return [hashlib.sha256(self.world.files[p][0]).hexdigest() if p in self.world.files else None for p in paths]

    def _verb_symlink(self, target: str, path: str) -> None:
        self.world.files[path] = (f"-> {target}".encode(), 0o777)

    def _verb_listdir(self, path: str) -> list[str]:
        return sorted({f[len(path) + 1:].split("/")[0] for f in self.world.files if f.startswith(f"{path}/")})


class FakeNodes(NodeEngine):
    """Hollow nodes as names: started ones turn Ready on the fake apiserver unless the
    World says they died."""

    name = "fake"

    def __init__(self, world: World) -> None:
        self.world = world

    @classmethod
    def build(cls, ctx: Context, site: NodeSite | None = None) -> FakeNodes:
        # Not in the engine registry: FakeProvider builds it with its World.
        raise NotImplementedError("FakeProvider.node_engine builds the fake engine")

    @property
    def where(self) -> str:
        return "the fake host"

    def prepare(self, ctx: Context, names: list[str]) -> None:
        self.world.journal.append(f"nodes prepare {len(names)}")

    def start(self, ctx: Context, names: list[str]) -> None:
        ctx.state.nodes = [*ctx.state.nodes, *names]  # recorded before they "run"
        ctx.save()
        self.world.journal.append(f"nodes start {' '.join(names)}")
        self.world.ready_nodes.update(n for n in names if n not in self.world.failed_nodes)

    def stop(self, ctx: Context) -> list[str]:
        self.world.journal.append("nodes stop")
        self.world.ready_nodes.clear()
        return []

    def locate(self, ctx: Context, node: str) -> NodeLocation:
        return NodeLocation(node=node, where="a name on the fake host")

    def failed(self, ctx: Context) -> dict[str, NodeFailure]:
        return {name: NodeFailure(why="its kubelet exited with code 2", log=f"{ROOT}/logs/{name}.log",
                                  log_tail="F1207 fake kubelet: no such flag --bogus")
                for name in sorted(self.world.failed_nodes) if name in ctx.state.nodes}

    def collect_logs(self, ctx: Context, out: Path) -> list[Path]:
        return []


class FakeProvider(Provider):
    """The master on a FakeHost, the nodes on FakeNodes; binaries are small local files
    (the Kubernetes ones are never needed), and one step of its own, "fake-disk", put
    among the shared ones with steps.insert as a cloud provider puts its resources."""

    name = "fake"
    settings_model = ProviderSettings
    world: ClassVar[World]  # set by the fake_world fixture

    def master(self, ctx: Context) -> MasterSite:
        paths = MasterPaths(pki_dir=f"{ROOT}/pki", kubeconfig_dir=f"{ROOT}/pki/kubeconfigs", data_dir=f"{ROOT}/data",
                            bin_dir=f"{ROOT}/bin", log_dir=f"{ROOT}/logs")
        return MasterSite(host=FakeHost(self.world), addresses=["127.0.0.1"], bind_address="127.0.0.1", paths=paths)

    def node_engine(self, ctx: Context) -> NodeEngine:
        return FakeNodes(self.world)

    def apiserver_port(self, ctx: Context) -> int:
        return self.world.apiserver_port

    def steps(self, shared: list[Step]) -> list[Step]:
        if self.world.only_own_steps:
            chosen = [self._watched(Step(key, f"fake {key}", lambda ctx: None, undo=lambda ctx: []))
                      for key in ("one", "two", "three")]
        else:
            chosen = [self._watched(Step("binaries", "", _fake_binaries)) if s.key == "binaries" else self._watched(s)
                      for s in shared]
        if self.world.own_steps:
            disk = Step("fake-disk", "make the fake disk", _make_disk, undo=_delete_disk, undo_title="delete the fake disk")
            # Where a cloud provider puts what goes into the serving certificate.
            anchor = "two" if self.world.only_own_steps else "pki"
            chosen = steps_mod.insert(chosen, before=anchor, new=[self._watched(disk)])
        return chosen

    def _watched(self, step: Step) -> Step:
        """The step as it is, with its runs and undos in the journal and the World's
        failures injected."""
        world = self.world

        def run(ctx: Context) -> None:
            world.journal.append(f"run {step.key} ({ctx.state.steps.get(step.key)})")
            if world.fail_step == step.key:
                raise KubemarkUpError(f"step {step.key} failed on purpose")
            step.run(ctx)

        def undo(ctx: Context) -> list[str]:
            world.journal.append(f"undo {step.key}")
            if step.key in world.fail_undo:
                return [f"could not undo {step.key}"]
            return step.undo(ctx) if step.undo else []

        return Step(step.key, step.title, run, undo=undo if step.undo else None, undo_title=step.undo_title,
                    plan=step.plan)


def _fake_binaries(ctx: Context) -> None:
    folder = ctx.dir.home / "fake-bin"
    folder.mkdir(exist_ok=True)
    for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubemark"):
        (folder / name).write_text(f"#!/bin/sh\n# not {name}\n")
        ctx.state.binaries[name] = str(folder / name)


def _make_disk(ctx: Context) -> None:
    with ctx.creating("disk", "fake-disk-1", step="fake-disk"):
        pass


def _delete_disk(ctx: Context) -> list[str]:
    for resource in ctx.resources("fake-disk"):
        ctx.forget(resource)
    return []


def register(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Make "fake" a provider of the entry-point group for this test, through a
    distribution's metadata on sys.path: the discovery path a third party uses."""
    info = folder / "kubemark_up_fake-0.1.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kubemark-up-fake\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[kubemark_up.providers]\nfake = tests.support.fakes:FakeProvider\n")
    monkeypatch.syspath_prepend(str(folder))
