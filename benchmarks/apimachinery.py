"""Benchmark: the API-machinery workloads of `kubemark-up run` on a master-only local
cluster (`start --nodes 0`): ConfigMap churn with the informer logger, the watch
storm with the watch cache on and off, and the HTTP/2 transport baseline.

    python3 benchmarks/apimachinery.py churn [--rate 50] [--duration 120] [--lifetime 10]
    python3 benchmarks/apimachinery.py storm [--steps 100,1000] [--cache on --cache off] [--writes 50] [--rate 5]
    python3 benchmarks/apimachinery.py http2 [--threads 8] [--connections 2] [--size 65536] [--period 0]
    python3 benchmarks/apimachinery.py flunder [--rate 50] [--duration 60] [--steps 100,1000]
    python3 benchmarks/apimachinery.py all

Each starts a cluster in a fresh KUBEMARK_UP_HOME (binaries from the normal cache or
KUBEMARK_UP_BIN_DIR) with the real CLI, runs the workload with `--out`, prints the
headline figures as JSON and stops the cluster. Result folders (a JSON per
measurement and report.html) go under benchmarks/results/apimachinery-<what>-<time>/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

from harness import run_on_fresh_cluster

RESULTS = Path(__file__).parent / "results"


def _metrics(out: Path, measurement: str) -> dict[str, Any]:
    document = json.loads((out / f"{measurement}.json").read_text())
    return {k: m["value"] for k, m in document["result"]["metrics"].items()}


def on_cluster(what: str, run_args: list[str], settings: dict[str, str] | None = None) -> tuple[Path, list[str]]:
    """Start a master-only cluster, run `kubemark-up run ...` on it, stop it; the result folder."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    out = RESULTS / f"apimachinery-{what}-{stamp}"
    command = ["run", *run_args, "--measure", "resources", "--out", str(out)]
    run_on_fresh_cluster(0, command[1:], settings)
    return out, command[:-2]


def churn(args: argparse.Namespace, workload: str = "configmap-churn") -> dict[str, Any]:
    out, command = on_cluster(workload, [workload, "--rate", str(args.rate), "--set", f"duration={args.duration}",
                                         "--set", f"lifetime={args.lifetime}", "--set", "informer=true"])
    result = workload.replace("-", "_")
    churned, informer, resources = _metrics(out, result), _metrics(out, "informer"), _metrics(out, "resources")
    pick = ("requested_rate", "achieved_rate", "creates", "deletes", "errors", "create_p50", "create_p99", "create_max",
            "delete_p50", "delete_p99", "lag_p99")
    return {"command": "kubemark-up " + " ".join(command), "results": str(out),
            **{f"churn_{k}": churned.get(k) for k in pick},
            **{f"informer_{k}": informer.get(k) for k in ("changes_made", "notifications", "missed", "notify_p50",
                                                          "notify_p90", "notify_p99", "notify_max", "dequeue_p99")},
            "apiserver_cpu_avg": resources.get("kube-apiserver_cpu_avg"),
            "apiserver_rss_max_mib": resources.get("kube-apiserver_rss_max"),
            "etcd_cpu_avg": resources.get("etcd_cpu_avg")}


def storm(args: argparse.Namespace, workload: str = "watch-storm") -> list[dict[str, Any]]:
    found = []
    for cache in args.cache or ["on", "off"]:
        settings = {"KUBEMARK_UP_WATCH_CACHE": "true" if cache == "on" else "false"}
        out, command = on_cluster(f"{workload}-cache-{cache}", [
            workload, "--rate", str(args.rate), "--set", f"steps={args.steps}", "--set", f"writes={args.writes}",
            "--set", f"window={args.window}"], settings)
        document = json.loads((out / f"{workload.replace('-', '_')}.json").read_text())
        for step in document["result"]["data"]["steps"]:
            found.append({"watch_cache": cache, "command": f"KUBEMARK_UP_WATCH_CACHE={settings['KUBEMARK_UP_WATCH_CACHE']} "
                          + "kubemark-up " + " ".join(command), "results": str(out),
                          **{k: step.get(k) for k in ("watchers", "open", "grow_seconds", "writes", "expected",
                                                      "deliveries", "missing", "duplicates", "dropped", "relists",
                                                      "rewatches", "delivery_p50", "delivery_p90", "delivery_p99",
                                                      "delivery_max", "kube-apiserver_cores", "kube-apiserver_rss_mib",
                                                      "etcd_cores", "etcd_rss_mib", "client_cores")},
                          "idle_kube-apiserver_rss_mib": step.get("idle", {}).get("kube-apiserver_rss_mib"),
                          "notes": document["result"]["notes"]})
    return found


def http2(args: argparse.Namespace) -> dict[str, Any]:
    out, command = on_cluster("http2", ["http2-baseline", "--set", f"threads={args.threads}",
                                        "--set", f"connections={args.connections}", "--set", f"size={args.size}",
                                        "--set", f"period={args.period}", "--set", f"blocks={args.blocks}"])
    return {"command": "kubemark-up " + " ".join(command), "results": str(out), **_metrics(out, "http2_baseline")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["churn", "storm", "http2", "flunder", "all"])
    parser.add_argument("--rate", type=float, default=None, help="churn: objects/s (50); storm: writes/s (5)")
    parser.add_argument("--duration", type=float, default=120)
    parser.add_argument("--lifetime", type=float, default=10)
    parser.add_argument("--steps", default="100,1000")
    parser.add_argument("--cache", action="append", choices=["on", "off"])
    parser.add_argument("--writes", type=int, default=50)
    parser.add_argument("--window", type=int, default=60)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--size", type=int, default=65536)
    parser.add_argument("--period", type=float, default=0)
    parser.add_argument("--blocks", type=int, default=2000)
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    rate = args.rate
    if args.what in ("churn", "all"):
        args.rate = rate or 50
        print(json.dumps({"churn": churn(args)}, indent=1), flush=True)
    if args.what in ("storm", "all"):
        args.rate = rate or 5
        print(json.dumps({"storm": storm(args)}, indent=1), flush=True)
    if args.what in ("http2", "all"):
        print(json.dumps({"http2": http2(args)}, indent=1), flush=True)
    if args.what in ("flunder", "all"):
        args.rate = rate or 50
        print(json.dumps({"flunder-churn": churn(args, "flunder-churn")}, indent=1), flush=True)
        args.rate = 5
        args.cache = args.cache or ["on"]
        print(json.dumps({"flunder-watch": storm(args, "flunder-watch")}, indent=1), flush=True)


if __name__ == "__main__":
    main()
