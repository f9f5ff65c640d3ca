"""Benchmark: `kubemark-up run density` (or `load`) on a local cluster of N hollow
nodes: pod startup p50/p99 and scheduling throughput, with the master's API latency
and CPU.

    python3 benchmarks/run_density.py --nodes 10 [--nodes 50] [--pods-per-node 30] [--rate 10] [--workload load]
        [--setting KUBEMARK_UP_X=VALUE ...]

For each node count it starts a cluster in a fresh KUBEMARK_UP_HOME (binaries from
the normal cache or KUBEMARK_UP_BIN_DIR) with the real CLI, runs
`kubemark-up run WORKLOAD --pods-per-node P --rate R --out DIR`, reads the result
files, and stops the cluster. Results: the run's folder (JSON per measurement and
report.html) under benchmarks/results/run-<workload>-<nodes>-<time>/, a summary on
stdout. --setting passes a start setting through the environment, e.g.
KUBEMARK_UP_CONTROLLER_MANAGER_EXTRA_ARGS="--kube-api-qps=100 --kube-api-burst=100"
(the legacy kubemark master's) or KUBEMARK_UP_WATCH_CACHE=false.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

from harness import run_on_fresh_cluster

RESULTS = Path(__file__).parent / "results"


def _value(out: Path, measurement: str, metric: str) -> float | None:
    document = json.loads((out / f"{measurement}.json").read_text())
    return document["result"]["metrics"].get(metric, {}).get("value")


def bench(workload: str, nodes: int, pods_per_node: int, rate: float, settings: dict[str, str]) -> dict:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    out = RESULTS / f"run-{workload}-{nodes}-{stamp}"
    command = ["run", workload, "--pods-per-node", str(pods_per_node), "--rate", str(rate)]
    exit_code = run_on_fresh_cluster(nodes, [*command[1:], "--out", str(out)], settings)
    figures = {
        "nodes": nodes, "pods_per_node": pods_per_node, "rate": rate, "settings": settings, "exit_code": exit_code,
        "command": "kubemark-up " + " ".join(command),
        "pods": _value(out, "pod_startup", "pods_running"),
        "pods_created_per_s": _value(out, "pod_startup", "creation_rate"),
        "pod_startup_p50": _value(out, "pod_startup", "create_to_running_p50"),
        "pod_startup_p90": _value(out, "pod_startup", "create_to_running_p90"),
        "pod_startup_p99": _value(out, "pod_startup", "create_to_running_p99"),
        "pod_startup_max": _value(out, "pod_startup", "create_to_running_max"),
        "scheduling_throughput_avg": _value(out, "scheduling_throughput", "average"),
        "scheduling_throughput_max": _value(out, "scheduling_throughput", "max"),
        "api_single_object_worst_p99": _value(out, "api_latency", "api_single_object_worst_p99"),
        "api_list_worst_p99": _value(out, "api_latency", "api_list_worst_p99"),
        "apiserver_cpu_avg": _value(out, "resources", "kube-apiserver_cpu_avg"),
        "overhead_apiserver_cpu_share": _value(out, "resources", "overhead_apiserver_cpu_share"),
        "results": str(out),
    }
    document = json.loads((out / "pod_startup.json").read_text())
    figures["achieved_rate"] = document["run"]["achieved_rate"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, action="append", required=True)
    parser.add_argument("--pods-per-node", type=int, default=30)
    parser.add_argument("--rate", type=float, default=10)
    parser.add_argument("--workload", default="density", choices=["density", "load"])
    parser.add_argument("--setting", action="append", default=[], help="KUBEMARK_UP_X=VALUE for start")
    args = parser.parse_args()
    settings = dict(item.split("=", 1) for item in args.setting)
    RESULTS.mkdir(exist_ok=True)
    for nodes in args.nodes:
        figures = bench(args.workload, nodes, args.pods_per_node, args.rate, settings)
        print(json.dumps(figures, indent=1), flush=True)


if __name__ == "__main__":
    main()
