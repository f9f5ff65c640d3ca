"""This machine as a Host: the agent's functions called in this process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

from kubemark_up import supervise
from kubemark_up.errors import HostError
from kubemark_up.hosts import agent
from kubemark_up.hosts.base import Completed, Host


class LocalHost(Host):
    name = "localhost"
    is_this_machine = True

    def __init__(self) -> None:
        # By path, not -m: the supervisor needs only the standard library.
        self.supervisor = str(Path(supervise.__file__))
        self.python = sys.executable

    def call(self, verb: str, **arguments: Any) -> Any:
        try:
            return agent.VERBS[verb](**arguments)
        except agent.AgentError as exc:
            raise HostError(str(exc)) from None

    def run(self, argv: Sequence[str], *, stdin: bytes = b"", timeout: float = 60) -> Completed:
        try:
            result = subprocess.run(list(argv), input=stdin, capture_output=True, timeout=timeout)
        except FileNotFoundError:
            return Completed(list(argv), 127, "", f"{argv[0]}: not found")
        except subprocess.TimeoutExpired:
            raise HostError(f"`{' '.join(argv)}` did not finish in {timeout:.0f}s") from None
        return Completed(list(argv), result.returncode, result.stdout.decode(errors="replace"),
                         result.stderr.decode(errors="replace"))

    def put(self, path: str, source: bytes | Path, *, mode: int) -> None:
        if isinstance(source, Path) and os.path.realpath(source) == os.path.realpath(path):
            return
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)
            if isinstance(source, Path):
                with source.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
            else:
                out.write(source)

    def get(self, path: str, local: Path) -> bool:
        if os.path.realpath(path) == os.path.realpath(local):
            return True
        try:
            shutil.copyfile(path, local)
        except FileNotFoundError:
            return False
        return True

    def usage(self, pids: Sequence[int]) -> dict[int, tuple[float, int]]:
        found = {}
        for pid in pids:
            try:
                process = psutil.Process(pid)
                with process.oneshot():
                    times = process.cpu_times()
                    found[pid] = (times.user + times.system, process.memory_info().rss)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found
