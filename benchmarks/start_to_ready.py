"""Benchmark: time from `kubemark-up start` to all hollow nodes Ready, and the cost of
each hollow node at steady state, for the local provider.

    python3 benchmarks/start_to_ready.py --nodes 10 --nodes 50 [--settle 30] [--sample 60]

For each node count it runs the real CLI in a fresh KUBEMARK_UP_HOME (binaries from
the normal cache or KUBEMARK_UP_BIN_DIR), then:
  - wall seconds from launching `start` until it exits with every node Ready, and the
    per-step timings start recorded in state.json;
  - after --settle seconds, CPU (cputime delta over --sample seconds) and PSS of every
    process, grouped as hollow kubelet, hollow proxy and each master component. PSS,
    not RSS: RSS counts the binary's file pages once per process although all copies
    share them;
  - wall seconds for `stop`.
Results: one JSON file per run in benchmarks/results/, and a summary on stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from kubemark_up.hosts import supervision_file

RESULTS = Path(__file__).parent / "results"


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, KUBEMARK_UP_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "kubemark_up", *args], env=env, capture_output=True, text=True)


def _bin_dir() -> str:
    if os.environ.get("KUBEMARK_UP_BIN_DIR"):
        return os.environ["KUBEMARK_UP_BIN_DIR"]
    from kubemark_up import binaries, config
    from kubemark_up.ui import UI

    found = binaries.resolve(config.resolve(flags={}, environ={}), config.home_dir(), UI(), sources=["build"])
    return str(found["kubemark"].path.parent)


def _sample(state: dict, seconds: float) -> dict:
    """CPU over `seconds` and PSS at the end, per role group."""
    processes = {}
    for name, record in state["processes"].items():
        pids = {name: record["pid"]}
        if record["role"] == "master":
            # state holds the supervisor's pid; the component is its child.
            status = json.loads(Path(supervision_file(record["log"])).read_text())
            pids = {name: status["pid"], "supervisor": record["pid"]}
        for group_name, pid in pids.items():
            try:
                process = psutil.Process(pid)
                role = "supervisor" if group_name == "supervisor" else record["role"]
                processes[f"{name}/{group_name}"] = (role, group_name, process, sum(process.cpu_times()[:2]))
            except psutil.NoSuchProcess:
                continue
    time.sleep(seconds)
    groups: dict[str, dict[str, list[float]]] = {}
    for role, name, process, cpu_before in processes.values():
        try:
            cpu = sum(process.cpu_times()[:2]) - cpu_before
            memory = process.memory_full_info()
        except psutil.NoSuchProcess:
            continue
        group = {"master": name, "supervisor": "kubemark-up supervisors"}.get(role, f"hollow {role}")
        entry = groups.setdefault(group, {"millicpu": [], "pss_mib": [], "rss_mib": [], "uss_mib": []})
        entry["millicpu"].append(1000 * cpu / seconds)
        entry["pss_mib"].append(memory.pss / 2**20)
        entry["rss_mib"].append(memory.rss / 2**20)
        entry["uss_mib"].append(memory.uss / 2**20)
    return {
        group: {
            "processes": len(values["millicpu"]),
            **{f"mean_{key}": round(sum(v) / len(v), 3) for key, v in values.items()},
            **{f"total_{key}": round(sum(v), 3) for key, v in values.items()},
        }
        for group, values in groups.items()
    }


def run(nodes: int, settle: float, sample: float, bin_dir: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="kmup-bench-") as tmp:
        home = Path(tmp)
        name = f"bench-{nodes}"
        began = time.monotonic()
        start = subprocess.run(
            [sys.executable, "-m", "kubemark_up", "start", "--name", name, "--nodes", str(nodes), "--bin-dir", bin_dir],
            env=dict(os.environ, KUBEMARK_UP_HOME=str(home)), capture_output=True, text=True,
        )
        start_seconds = time.monotonic() - began
        if start.returncode != 0:
            _cli(home, "stop", "--name", name)
            raise SystemExit(f"start of {nodes} nodes failed:\n{start.stderr[-3000:]}")
        state = json.loads((home / name / "state.json").read_text())
        time.sleep(settle)
        usage = _sample(state, sample)
        began = time.monotonic()
        stop = _cli(home, "stop", "--name", name, "--purge")
        stop_seconds = time.monotonic() - began
        if stop.returncode != 0:
            raise SystemExit(f"stop failed:\n{stop.stderr[-3000:]}")
    kubelet, proxy = usage.get("hollow kubelet", {}), usage.get("hollow proxy", {})
    per_node = {
        "millicpu": round(kubelet.get("mean_millicpu", 0) + proxy.get("mean_millicpu", 0), 3),
        "pss_mib": round(kubelet.get("mean_pss_mib", 0) + proxy.get("mean_pss_mib", 0), 3),
        "rss_mib": round(kubelet.get("mean_rss_mib", 0) + proxy.get("mean_rss_mib", 0), 3),
    }
    return {
        "nodes": nodes,
        "start_to_ready_seconds": round(start_seconds, 2),
        "step_seconds": state["timings"],
        "stop_seconds": round(stop_seconds, 2),
        "settle_seconds": settle,
        "sample_seconds": sample,
        "per_hollow_node": per_node,
        "groups": usage,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, action="append", help="node counts (repeatable) [10, 50]")
    parser.add_argument("--settle", type=float, default=30, help="seconds after Ready before sampling")
    parser.add_argument("--sample", type=float, default=60, help="seconds of CPU sampling")
    args = parser.parse_args()
    bin_dir = _bin_dir()
    machine = {"cpus": psutil.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1)}
    RESULTS.mkdir(exist_ok=True)
    for nodes in args.nodes or [10, 50]:
        result = run(nodes, args.settle, args.sample, bin_dir)
        result["machine"] = machine
        result["when"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        path = RESULTS / f"start-to-ready-{nodes}-{result['when'].replace(':', '')}.json"
        path.write_text(json.dumps(result, indent=1))
        node = result["per_hollow_node"]
        print(
            f"{nodes} hollow nodes: Ready {result['start_to_ready_seconds']}s after start; per node "
            f"{node['millicpu']} mCPU, {node['pss_mib']} MiB PSS ({node['rss_mib']} MiB RSS); "
            f"stop {result['stop_seconds']}s  [{path}]",
            flush=True,
        )


if __name__ == "__main__":
    main()
