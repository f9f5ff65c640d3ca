"""What the preexisting cluster tests share: a Remote (a kubemark-up home here whose
clusters' master is a real unprivileged sshd's host, this machine seen through a loopback
port: tests/support/sshd.py) and the checks that nothing of a cluster is left there.
The remote fixture that makes one is in tests/cluster/conftest.py."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import yaml

from tests.support.cli import CLI, kubemark_tmp_files, marked_processes
from tests.support.sshd import SSHServer


@dataclass
class Remote:
    """A kubemark-up home here whose clusters' master is the sshd's host."""

    cli: CLI
    sshd: SSHServer
    root: Path  # preexisting.remote_root: made by start, removed by stop
    settings: dict = field(default_factory=dict)
    tmp_before: set[str] = field(default_factory=set)

    def config(self, **overrides: object) -> Path:
        section = {
            "host": self.sshd.host, "port": self.sshd.port, "user": self.sshd.user,
            "identity_file": str(self.sshd.client_key), "known_hosts": str(self.sshd.known_hosts),
            "remote_root": str(self.root), "connect_timeout": 5, **overrides,
        }
        path = self.cli.home.parent / f"config-{len(list(self.cli.home.parent.glob('config-*')))}.yaml"
        path.write_text(yaml.safe_dump({"provider": "preexisting", "preexisting": section}))
        return path

    def start(self, name: str, nodes: int, *extra: str, **overrides: object) -> subprocess.CompletedProcess:
        return self.cli.run("start", "--name", name, "--nodes", str(nodes), "--config", str(self.config(**overrides)),
                            *extra, timeout=600)

    def popen(self, name: str, nodes: int, **overrides: object) -> subprocess.Popen:
        return self.cli.popen("start", "--name", name, "--nodes", str(nodes), "--config", str(self.config(**overrides)))

    def state(self, name: str) -> dict:
        return json.loads((self.cli.home / name / "state.json").read_text())

    def cluster_root(self, name: str) -> Path:
        return self.root / name


def remote_processes(user: str) -> list[psutil.Process]:
    """The live processes of the SSH user other than its sshd sessions and their shells."""
    found = []
    for process in psutil.process_iter(["username", "name", "status"]):
        info = process.info
        if info["username"] == user and info["status"] != psutil.STATUS_ZOMBIE and info["name"] not in ("sshd", "sh"):
            found.append(process)
    return found


def assert_nothing_left(remote: Remote, name: str) -> None:
    """Nothing of ours on the host: no process, no file under the remote root (which
    start made, so it goes too), no hollow-kubelet files in /tmp; none here either."""
    assert remote_processes(remote.sshd.user) == []
    assert not remote.root.exists(), sorted(str(p) for p in remote.root.rglob("*"))
    assert kubemark_tmp_files() - remote.tmp_before == set()
    assert marked_processes(remote.cli.home / name) == []
    assert not (remote.cli.home / name / "state.json").exists()
