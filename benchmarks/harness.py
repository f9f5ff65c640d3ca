"""What the benchmarks share, and the one module of benchmarks/ that knows where the
real parts they start live: the sshd, the Compute endpoint and the root cluster are
the tests' (tests/support/), re-exported here so that a benchmark imports harness
alone. Benchmarks run as scripts (`python3 benchmarks/x.py`), with benchmarks/ on
sys.path; the repository's root is put ahead of it here, once, so that tests.support
and this checkout's kubemark_up are the ones imported.

Besides: the Kubernetes binaries (bin_dir), the real CLI in a fresh KUBEMARK_UP_HOME
(binaries from the normal cache or KUBEMARK_UP_BIN_DIR; no other KUBEMARK_UP_ setting
leaks in from the caller's environment), one `kubemark-up run` on a cluster started
for it, and the pids of a local cluster's processes from its state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# The one path trick of benchmarks/: the checkout root, for tests.support and this kubemark_up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.cli import CLI
from tests.support.gce_endpoint import ComputeEndpoint
from tests.support.rootcluster import GATEWAY, RootCluster
from tests.support.sshd import SSHServer

__all__ = ["CLI", "GATEWAY", "ComputeEndpoint", "RootCluster", "SSHServer", "bin_dir", "cli", "process_pids",
           "run_on_fresh_cluster"]


def bin_dir() -> Path:
    """The Kubernetes binaries: $KUBEMARK_UP_BIN_DIR, else the user's cache, built if missing."""
    if os.environ.get("KUBEMARK_UP_BIN_DIR"):
        return Path(os.environ["KUBEMARK_UP_BIN_DIR"])
    from kubemark_up import binaries, config
    from kubemark_up.providers.registry import resolve_settings
    from kubemark_up.ui import UI

    found = binaries.resolve(resolve_settings(flags={}, environ={}), config.home_dir(), UI(), sources=["build"])
    return found["kubemark"].path.parent


def cli(home: Path, *args: str, timeout: float, settings: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBEMARK_UP_") or k == "KUBEMARK_UP_BIN_DIR"}
    env.update(settings or {})
    env["KUBEMARK_UP_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "kubemark_up", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def run_on_fresh_cluster(nodes: int, run_args: list[str], settings: dict[str, str] | None = None) -> int:
    """Start a cluster of `nodes` hollow nodes (named bench), run `kubemark-up run
    RUN_ARGS --name bench` on it, stop and purge it; the run's exit code (0, or 3 when
    an SLO failed). Any other ending stops the benchmark with the CLI's own words."""
    with tempfile.TemporaryDirectory(prefix="kubemark-bench-") as tmp:
        home = Path(tmp)
        started = cli(home, "start", "--name", "bench", "--nodes", str(nodes), timeout=1800, settings=settings)
        try:
            if started.returncode != 0:
                raise SystemExit(f"start failed: {started.stderr[-2000:]}")
            run = cli(home, "run", *run_args, "--name", "bench", timeout=3600)
            if run.returncode not in (0, 3):
                raise SystemExit(f"run failed ({run.returncode}): {run.stderr[-3000:]}")
            return run.returncode
        finally:
            cli(home, "stop", "--name", "bench", "--purge", timeout=600)


def process_pids(state: dict) -> dict[str, tuple[str, int]]:
    """name -> (role, pid) of every process a local cluster's state.json records, as
    start_to_ready finds them: a master component's own pid is its supervisor's child
    (read from the supervisor's file, so it follows restarts), a node process's is the
    one recorded. A process not started yet, or a supervisor that says nothing, is left out."""
    from kubemark_up.hosts import supervision_file

    found = {}
    for name, record in state.get("processes", {}).items():
        pid = record.get("pid")
        if record.get("role") == "master":
            try:
                pid = json.loads(Path(supervision_file(record["log"])).read_text()).get("pid")
            except (OSError, ValueError):
                pid = None
        if isinstance(pid, int):
            found[name] = (record.get("role", ""), pid)
    return found
