"""What the tests share that is not a fixture: the CLI run as a user runs it, a
started cluster's handle, and what a test looks at from outside (marked processes,
/tmp files, iptables, listening ports, one-line errors)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil

from kubemark_up.hosts import MARKER_ENV

CLUSTER_NODES = 3


@dataclass
class CLI:
    home: Path
    bin_dir: Path | None
    # The node engine the commands run with: None, the default (fleet); "kubemark" for
    # the tests about stock kubemark's processes (their PIDs, logs, /tmp files, iptables).
    engine: str | None = None

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBEMARK_UP_")}
        env["KUBEMARK_UP_HOME"] = str(self.home)
        if self.bin_dir is not None:
            env["KUBEMARK_UP_BIN_DIR"] = str(self.bin_dir)
        # Never reach for the internet from a test.
        env["KUBEMARK_UP_BINARY_SOURCES"] = "build"
        if self.engine is not None:
            env["KUBEMARK_UP_NODE_ENGINE"] = self.engine
        env.update(extra)
        return env

    def run(self, *args: str, timeout: float = 300, **extra_env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "kubemark_up", *args],
            env=self.env(**extra_env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def popen(self, *args: str, **extra_env: str) -> subprocess.Popen:
        """The CLI as a user starts it from a terminal, where Ctrl-C is never ignored."""
        return subprocess.Popen(
            [sys.executable, "-m", "kubemark_up", *args],
            env=self.env(**extra_env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_terminal_sigint,
        )


def _terminal_sigint() -> None:
    # A suite started in the background (`bash .ci/run &`) hands its children SIGINT
    # ignored, and Python keeps it ignored, as POSIX asks: the Ctrl-C tests' SIGINT
    # would then be lost and the command would run to its end.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def marked_processes(cluster_dir: Path) -> list[psutil.Process]:
    """Live processes carrying this cluster's marker (what stop must leave none of)."""
    found = []
    for process in psutil.process_iter():
        try:
            value = process.environ().get(MARKER_ENV, "")
            ours = value == str(cluster_dir) or value.startswith(f"{cluster_dir}#")
            if ours and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def kubemark_tmp_files() -> set[str]:
    """What stock hollow kubelets leave in /tmp (root folders, fake CRI sockets)."""
    return {str(p) for pattern in ("hollow-kubelet.*", "kubelet_remote_*.sock") for p in Path("/tmp").glob(pattern)}


def host_tables() -> str:
    """This machine's iptables and ip6tables rules and chains, without counters or the
    comment lines iptables-save stamps with the time: what a test compares before and after."""
    dumps = []
    for tool in ("iptables-save", "ip6tables-save"):
        result = subprocess.run([tool], capture_output=True, text=True, check=True)
        dumps += [line.split(" [")[0] for line in result.stdout.splitlines() if not line.startswith("#")]
    return "\n".join(dumps)


def mounts() -> list[str]:
    return sorted(Path("/proc/self/mounts").read_text().splitlines())


def listening(ports) -> list[int]:
    wanted = set(ports)
    return sorted(
        {c.laddr.port for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.laddr.port in wanted}
    )


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    # Progress lines may come first; the error is one line (its detail, a log tail,
    # follows it), and there is exactly one.
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


@dataclass
class RunningCluster:
    cli: CLI
    name: str
    start: subprocess.CompletedProcess
    tmp_before: set[str]
    host_before: tuple[str, list[str]] | None = None  # iptables and mounts before start

    @property
    def dir(self) -> Path:
        return self.cli.home / self.name

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig.kubemark"

    def state(self) -> dict:
        return json.loads((self.dir / "state.json").read_text())

    def kubectl(self, *args: str, timeout: float = 60, kubeconfig: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["kubectl", "--kubeconfig", str(kubeconfig or self.kubeconfig), *args],
            capture_output=True, text=True, timeout=timeout,
        )
