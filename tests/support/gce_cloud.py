"""What the gce cluster tests share: a Cloud (the strict test Compute endpoint,
tests/support/gce_endpoint/, whose VM's external IP leads to a real unprivileged sshd,
and the CLI pointed at both) and the checks that nothing of a cluster is left in it.
The cloud fixture that makes one is in tests/cluster/conftest.py."""

from __future__ import annotations

import json
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import yaml

from tests.support.cli import CLI
from tests.support.gce_endpoint import ComputeEndpoint
from tests.support.sshd import SSHServer

PROJECT, ZONE, REGION = "test-project", "us-central1-b", "us-central1"
LABEL, OWNER = "kubemark-up-cluster", "kubemark-up-owner"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cloud:
    cli: CLI
    endpoint: ComputeEndpoint
    sshd: SSHServer
    root: Path  # gce.remote_root on the "VM"
    keys_before: str = ""
    configs: list[Path] = field(default_factory=list)

    def config(self, **gce: object) -> Path:
        section = {
            "project": PROJECT, "zone": ZONE, "source_ranges": ["127.0.0.1/32"], "ssh_user": self.sshd.user,
            "ssh_port": self.sshd.port, "remote_root": str(self.root), "bind_address": "127.0.0.1",
            "events_root": str(self.root / "events-pd"), "connect_timeout": 5, "ssh_wait_timeout": 20, **gce,
        }
        path = self.cli.home.parent / f"gce-{len(self.configs)}.yaml"
        path.write_text(yaml.safe_dump({"provider": "gce", "gce": section}))
        self.configs.append(path)
        return path

    def env(self) -> dict[str, str]:
        return {"KUBEMARK_UP_GCE_ENDPOINT": self.endpoint.url}

    def args(self, name: str, nodes: int, **gce: object) -> list[str]:
        return ["start", "--name", name, "--nodes", str(nodes), "--config", str(self.config(**gce)),
                "--apiserver-port", str(_free_port())]

    def start(self, name: str, nodes: int = 0, **gce: object) -> subprocess.CompletedProcess:
        return self.cli.run(*self.args(name, nodes, **gce), timeout=600, **self.env())

    def stop(self, name: str, *extra: str) -> subprocess.CompletedProcess:
        return self.cli.run("stop", "--name", name, *extra, timeout=300, **self.env())

    def state(self, name: str) -> dict:
        return json.loads((self.cli.home / name / "state.json").read_text())

    def ours(self) -> list[dict]:
        return [r for r in self.endpoint.items() if r.get("labels", {}).get(LABEL) or r["kind"] == "compute#firewall"]


def remote_processes(user: str, root: Path) -> list[psutil.Process]:
    """The live processes of the SSH user that run from under root (the sshd user is
    shared with other tests: only what runs from this test's folder is this test's)."""
    found = []
    for process in psutil.process_iter(["username", "name", "status", "cmdline"]):
        info = process.info
        if info["username"] != user or info["status"] == psutil.STATUS_ZOMBIE or info["name"] in ("sshd", "sh"):
            continue
        if str(root) in " ".join(info["cmdline"] or []):
            found.append(process)
    return found


def assert_nothing_left(cloud: Cloud, name: str) -> None:
    assert cloud.endpoint.items() == [], cloud.endpoint.names()
    assert remote_processes(cloud.sshd.user, cloud.root) == []
    assert list(cloud.root.iterdir()) == []
    assert (cloud.sshd.dir / "authorized_keys").read_text() == cloud.keys_before
    assert not (cloud.cli.home / name / "state.json").exists()


def _host_key(sshd: SSHServer) -> str:
    """The "VM"'s SSH host key, as it publishes it: type and key."""
    return " ".join(sshd.host_key.with_suffix(".pub").read_text().split()[:2])


def _calls(cloud: Cloud, since: float) -> list[str]:
    return [e.method_id for e in cloud.endpoint.calls(since) if e.method_id]
