"""Benchmark: hollow nodes as pods on a real root cluster (the tests' root cluster:
a real kubelet with containerd, runc and a CNI bridge on this machine, and a registry
on loopback). Needs root, like the tests that use it.

    sudo python3 benchmarks/pods_start.py --nodes 5 --nodes 20 [--settle 30] [--sample 60]

For each count: seconds from `kubemark-up start` (local master at the bridge's
address, hollow_nodes: pods) to every node Ready; then, after --settle seconds, the
root node's cost per hollow-node pod over --sample seconds: CPU and PSS of the pod's
processes (the hollow kubelet, proxy and node-problem-detector, the pause container
and the containerd shim), and beside them the root node's kubelet and containerd.
Results: JSON in benchmarks/results/, and a summary on stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.cli import CLI
from tests.support.rootcluster import GATEWAY, RootCluster

RESULTS = Path(__file__).parent / "results"
_POD_COMMANDS = ("/kubemark", "/node-problem-detector", "/pause")


def _bin_dir() -> Path:
    from kubemark_up import binaries, config
    from kubemark_up.providers.registry import resolve_settings
    from kubemark_up.ui import UI

    if os.environ.get("KUBEMARK_UP_BIN_DIR"):
        return Path(os.environ["KUBEMARK_UP_BIN_DIR"])
    found = binaries.resolve(resolve_settings(flags={}, environ={}), config.home_dir(), UI(), sources=["build"])
    return found["kubemark"].path.parent


def _groups(root: RootCluster) -> dict[str, list[psutil.Process]]:
    """The processes of the hollow-node pods, and the root node's own."""
    groups: dict[str, list[psutil.Process]] = {"pods": [], "root kubelet": [], "containerd": []}
    kubelet, containerd = root.processes["kubelet"].pid, root.processes["containerd"].pid
    for process in psutil.process_iter(["pid", "cmdline"]):
        argv = process.info["cmdline"] or []
        if not argv:
            continue
        if process.pid == kubelet:
            groups["root kubelet"].append(process)
        elif process.pid == containerd:
            groups["containerd"].append(process)
        elif argv[0] in _POD_COMMANDS or ("containerd-shim" in argv[0] and str(root.socket) in " ".join(argv)):
            groups["pods"].append(process)
    return groups


def _sample(root: RootCluster, seconds: float) -> dict:
    groups = _groups(root)
    before = {p.pid: sum(p.cpu_times()[:2]) for members in groups.values() for p in members}
    time.sleep(seconds)
    usage = {}
    for name, members in groups.items():
        cpu = pss = 0.0
        for process in members:
            try:
                cpu += sum(process.cpu_times()[:2]) - before[process.pid]
                pss += process.memory_full_info().pss
            except psutil.NoSuchProcess:
                continue
        usage[name] = {"processes": len(members), "millicpu": round(1000 * cpu / seconds, 2),
                       "pss_mib": round(pss / 2**20, 1)}
    return usage


def run(root: RootCluster, image: str, nodes: int, *, settle: float, sample: float, bin_dir: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="kmup-pods-bench-") as tmp:
        cli = CLI(home=Path(tmp) / "home", bin_dir=bin_dir)
        config = Path(tmp) / "config.yaml"
        config.write_text(yaml.safe_dump({"hollow_nodes": "pods", "local": {"address": GATEWAY},
                                          "pods": {"kubeconfig": str(root.kubeconfig), "image": image}}))
        name = f"pods-{nodes}"
        began = time.monotonic()
        start = cli.run("start", "--name", name, "--nodes", str(nodes), "--config", str(config), timeout=1800)
        ready = time.monotonic() - began
        if start.returncode != 0:
            cli.run("stop", "--name", name, timeout=900)
            raise SystemExit(f"start of {nodes} pods failed:\n{start.stderr[-3000:]}")
        state = json.loads((cli.home / name / "state.json").read_text())
        time.sleep(settle)
        usage = _sample(root, sample)
        began = time.monotonic()
        stop = cli.run("stop", "--name", name, "--purge", timeout=900)
        stopped = time.monotonic() - began
        if stop.returncode != 0:
            raise SystemExit(f"stop failed:\n{stop.stderr[-3000:]}")
    pods = usage["pods"]
    return {
        "nodes": nodes, "start_to_ready_seconds": round(ready, 2), "step_seconds": state["timings"],
        "stop_seconds": round(stopped, 2), "settle_seconds": settle, "sample_seconds": sample,
        "per_pod": {"millicpu": round(pods["millicpu"] / nodes, 2), "pss_mib": round(pods["pss_mib"] / nodes, 1)},
        "groups": usage,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--nodes", type=int, action="append", help="pod counts (repeatable) [5, 20]")
    parser.add_argument("--settle", type=float, default=30)
    parser.add_argument("--sample", type=float, default=60)
    args = parser.parse_args()
    bin_dir = _bin_dir()
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kmup-root-bench-") as tmp:
        root = RootCluster(folder=Path(tmp) / "node", cli=CLI(home=Path(tmp) / "home", bin_dir=bin_dir))
        root.start()
        try:
            pusher = CLI(home=Path(tmp) / "image-home", bin_dir=bin_dir)
            pushed = pusher.run("image", "push", f"{root.registry}/kubemark:bench", timeout=900)
            if pushed.returncode != 0:
                raise SystemExit(f"image push failed:\n{pushed.stderr[-2000:]}")
            image = pushed.stdout.strip().splitlines()[-1]
            for nodes in args.nodes or [5, 20]:
                result = run(root, image, nodes, settle=args.settle, sample=args.sample, bin_dir=bin_dir)
                result["machine"] = {"cpus": psutil.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1)}
                result["when"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
                path = RESULTS / f"pods-start-{nodes}-{result['when'].replace(':', '')}.json"
                path.write_text(json.dumps(result, indent=1))
                per = result["per_pod"]
                print(f"{nodes} hollow-node pods: Ready {result['start_to_ready_seconds']}s after start; per pod "
                      f"{per['millicpu']} mCPU, {per['pss_mib']} MiB PSS on the root node; root kubelet "
                      f"{result['groups']['root kubelet']['millicpu']} mCPU; stop {result['stop_seconds']}s  [{path}]",
                      flush=True)
        finally:
            root.stop()


if __name__ == "__main__":
    main()
