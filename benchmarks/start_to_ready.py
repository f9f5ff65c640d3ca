"""Benchmark: time from `kubemark-up start` to all hollow nodes Ready, and the cost of
each hollow node at steady state.

    python3 benchmarks/start_to_ready.py --nodes 10 --nodes 50 [--repeat 5] [--wave W]
        [--provider local|preexisting] [--settle 30] [--sample 60 | --sample 0]
        [--engine kubemark --engine fleet] [--fleet-processes P]
    python3 benchmarks/start_to_ready.py --run kubemark:100 --run fleet:100 --run fleet:1000 --run fleet:3000:2

For each node count (and each repeat) it runs the real CLI in a fresh
KUBEMARK_UP_HOME (binaries from the normal cache or KUBEMARK_UP_BIN_DIR), then:
  - wall seconds from launching `start` until it exits with every node Ready, the
    per-step timings start recorded in state.json, and how often each master
    component restarted meanwhile (its supervisor's count);
  - after --settle seconds, CPU (cputime delta over --sample seconds) and PSS of every
    process, grouped as hollow kubelet, hollow proxy and each master component. PSS,
    not RSS: RSS counts the binary's file pages once per process although all copies
    share them;
  - wall seconds for `stop`.
With --engine given more than once, each node count runs on each engine in turn, one
after another on the same machine and master build: stock kubemark nodes beside fleet
nodes. --run ENGINE:NODES[:FLEET_PROCESSES] (repeatable) names each run instead, so
one invocation can set stock kubemark at the counts it manages beside fleets far
larger; ENGINE:NODES@BIN_DIR runs with the binaries of BIN_DIR (another build of the
fleet, say) beside the others, in the same invocation. A fleet's cost per node is its
processes' total over its nodes; the master's CPU and memory under each are reported
too (what the nodes cost the master).
After the sample, `status` says whether every node is still Ready and whether a
master component restarted: a cluster "held" only if both hold, which is how the
largest fleet the master holds is found. A fleet run also reads its processes' status
files: Events its kubelets could not send (dropped) mark it not held, and the script
exits non-zero. A table of all runs ends the output.
With --provider preexisting the master and the nodes run on "another" host: this
machine through a real unprivileged sshd on a loopback port (tests/support/sshd.py), so
every file and command goes through SSH.
Results: one JSON file per run in benchmarks/results/, and a summary on stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from harness import SSHServer, bin_dir

from kubemark_up.hosts import supervision_file

RESULTS = Path(__file__).parent / "results"




def _supervised(record: dict) -> dict:
    try:
        return json.loads(Path(supervision_file(record["log"])).read_text())
    except (OSError, ValueError):
        return {}


def _sample(state: dict, seconds: float) -> dict:
    """CPU over `seconds` and PSS at the end, per role group."""
    processes = {}
    for name, record in state["processes"].items():
        pids = {name: record["pid"]}
        if record["role"] == "master":
            # state holds the supervisor's pid; the component is its child.
            pids = {name: _supervised(record).get("pid"), "supervisor": record["pid"]}
        for group_name, pid in pids.items():
            try:
                process = psutil.Process(pid)
                role = "supervisor" if group_name == "supervisor" else record["role"]
                processes[f"{name}/{group_name}"] = (role, group_name, process, sum(process.cpu_times()[:2]))
            except (psutil.NoSuchProcess, TypeError):
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


def _held(env: dict, name: str) -> dict:
    """Whether, after settling and sampling, every node is still Ready and no master
    component has restarted since start: what "the master holds" this many nodes means."""
    status = subprocess.run([sys.executable, "-m", "kubemark_up", "status", "--name", name, "-o", "json"],
                            env=env, capture_output=True, text=True)
    try:
        report = json.loads(status.stdout)
    except ValueError:
        return {"held": False, "why": f"status printed no report: {status.stderr.strip()[-300:]}"}
    nodes = report["nodes"]
    restarts = {c["name"]: c["restarts"] for c in report["master"]["components"] if c["restarts"]}
    held = bool(report["master"]["healthy"]) and nodes["ready"] == nodes["total"] and not restarts
    return {"held": held, "nodes_ready": nodes["ready"], "nodes_total": nodes["total"], "nodes_error": nodes["error"],
            "master_healthy": report["master"]["healthy"], "master_restarts": restarts}


def _fleet_events(state: dict) -> dict[str, int]:
    """The fleet processes' kubelet Events (recorded, sent, filtered, rejected, dropped),
    summed from their status files, asked for now (SIGUSR1)."""
    records = [r for r in state["processes"].values() if r["role"] == "fleet"]
    asked = time.time()
    for record in records:
        try:
            os.kill(record["pid"], signal.SIGUSR1)
        except ProcessLookupError:
            pass
    totals: dict[str, int] = {}
    for record in records:
        path = Path(record["argv"][-1].removesuffix(".json") + ".status.json")
        status: dict = {}
        for _ in range(50):  # up to 10 s for the file asked for
            try:
                status = json.loads(path.read_text())
            except (OSError, ValueError):
                status = {}
            if status.get("time", 0) >= asked:
                break
            time.sleep(0.2)
        for key, count in (status.get("events") or {}).items():
            totals[key] = totals.get(key, 0) + count
    return totals


def _runs(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[tuple[str, int, int, str | None]]:
    """(engine, nodes, fleet processes, binaries or None) for each run, from --run or --nodes x --engine."""
    if not args.run:
        return [(e, n, args.fleet_processes, None) for n in args.nodes or [10, 50] for e in args.engine or ["kubemark"]]
    if args.nodes or args.engine:
        parser.error("--run names engine and nodes itself: give --run or --nodes/--engine, not both")
    runs = []
    for spec in args.run:
        spec, _, binaries = spec.partition("@")
        if binaries and not Path(binaries).is_dir():
            parser.error(f"--run {spec}@{binaries}: no such folder")
        engine, *counts = spec.split(":")
        try:
            nodes, processes = int(counts[0]), int(counts[1]) if len(counts) == 2 else 1
        except (IndexError, ValueError):
            nodes = processes = 0
        if engine not in ("kubemark", "fleet") or len(counts) > 2 or nodes < 1 or processes < 1:
            parser.error(f"--run {spec!r}: expected ENGINE:NODES[:FLEET_PROCESSES][@BIN_DIR] with ENGINE kubemark "
                         "or fleet, e.g. fleet:1000:2")
        runs.append((engine, nodes, processes, binaries or None))
    return runs


def _why_not(held: dict) -> str:
    if "why" in held:
        return held["why"]
    ready = held["nodes_ready"]
    reasons = [f"{ready}/{held['nodes_total']} Ready" if ready is not None else f"nodes not counted: {held['nodes_error']}"]
    if not held["master_healthy"]:
        reasons.append("master unhealthy")
    if held["master_restarts"]:
        reasons.append(f"restarts {held['master_restarts']}")
    return "; ".join(reasons)


def _table(results: list[dict], binaries: str) -> str:
    """The runs as one Markdown table, as the README carries it."""
    lines = ["| engine | hollow nodes | start -> all Ready | CPU per node | PSS per node | kube-apiserver | held |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        engine = "stock kubemark" if r["engine"] == "kubemark" else "fleet"
        if r["engine"] == "fleet" and r["fleet_processes"] > 1:
            engine += f", {r['fleet_processes']} processes"
        if r.get("bin_dir", binaries) != binaries:
            engine += f" ({r['bin_dir']})"
        node, apiserver, held = r["per_hollow_node"], r["master"]["kube-apiserver"], r["held"]
        api = "-" if apiserver["millicpu"] is None else f"{apiserver['millicpu']:.0f} mCPU, {apiserver['pss_mib']:.0f} MiB"
        verdict = "yes" if held["held"] else f"no ({_why_not(held)})"
        lines.append(f"| {engine} | {r['nodes']:,} | {r['start_to_ready_seconds']:.1f} s | {node['millicpu']:.2f} mCPU "
                     f"| {node['pss_mib']:.2f} MiB | {api} | {verdict} |")
    return "\n".join(lines)


def _config(home: Path, provider: str, sshd: SSHServer | None) -> list[str]:
    if provider == "local":
        return []
    assert sshd is not None
    path = home / "config.yaml"
    path.write_text(
        "provider: preexisting\npreexisting:\n"
        f"  host: {sshd.host}\n  port: {sshd.port}\n  user: {sshd.user}\n"
        f"  identity_file: {sshd.client_key}\n  known_hosts: {sshd.known_hosts}\n"
        f"  remote_root: {sshd.home}/kmup-bench\n"
    )
    return ["--config", str(path)]


def run(nodes: int, *, provider: str, wave: int | None, settle: float, sample: float, bin_dir: str,
        sshd: SSHServer | None, engine: str = "kubemark", fleet_processes: int = 1) -> dict:
    with tempfile.TemporaryDirectory(prefix="kmup-bench-") as tmp:
        home = Path(tmp)
        env = dict(os.environ, KUBEMARK_UP_HOME=str(home), KUBEMARK_UP_BIN_DIR=bin_dir)
        if wave:
            env["KUBEMARK_UP_NODE_START_WAVE"] = str(wave)
        name = f"bench-{nodes}"
        extra = [*_config(home, provider, sshd), "--node-engine", engine, "--fleet-processes", str(fleet_processes)]
        began = time.monotonic()
        start = subprocess.run(
            [sys.executable, "-m", "kubemark_up", "start", "--name", name, "--nodes", str(nodes), *extra],
            env=env, capture_output=True, text=True,
        )
        start_seconds = time.monotonic() - began
        if start.returncode != 0:
            subprocess.run([sys.executable, "-m", "kubemark_up", "stop", "--name", name], env=env)
            raise SystemExit(f"start of {nodes} nodes failed:\n{start.stderr[-3000:]}")
        state = json.loads((home / name / "state.json").read_text())
        restarts = {n: _supervised(r).get("restarts", 0) for n, r in state["processes"].items() if r["role"] == "master"}
        usage = {}
        if sample > 0:
            time.sleep(settle)
            usage = _sample(state, sample)
        held = _held(env, name)
        events = _fleet_events(state) if engine == "fleet" else {}
        if events.get("dropped"):
            # A fleet that could not send some of its kubelets' Events is not a faithful one.
            held = {**held, "held": False, "why": f"{events['dropped']} kubelet Events dropped at rest"}
        began = time.monotonic()
        stop = subprocess.run([sys.executable, "-m", "kubemark_up", "stop", "--name", name, "--purge"],
                              env=env, capture_output=True, text=True)
        stop_seconds = time.monotonic() - began
        if stop.returncode != 0:
            raise SystemExit(f"stop failed:\n{stop.stderr[-3000:]}")
    kubelet, proxy = usage.get("hollow kubelet", {}), usage.get("hollow proxy", {})
    if engine == "fleet":
        fleet = usage.get("hollow fleet", {})
        per_node = {key: round(fleet.get(f"total_{key}", 0) / nodes, 4) for key in ("millicpu", "pss_mib", "rss_mib")}
    else:
        per_node = {
            "millicpu": round(kubelet.get("mean_millicpu", 0) + proxy.get("mean_millicpu", 0), 3),
            "pss_mib": round(kubelet.get("mean_pss_mib", 0) + proxy.get("mean_pss_mib", 0), 3),
            "rss_mib": round(kubelet.get("mean_rss_mib", 0) + proxy.get("mean_rss_mib", 0), 3),
        }
    master = {name: {"millicpu": usage.get(name, {}).get("total_millicpu"), "pss_mib": usage.get(name, {}).get("total_pss_mib")}
              for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")}
    return {
        "provider": provider,
        "engine": engine,
        "fleet_processes": fleet_processes if engine == "fleet" else None,
        "nodes": nodes,
        "wave": wave or "default",
        "start_to_ready_seconds": round(start_seconds, 2),
        "nodes_ready": state.get("nodes_ready"),
        "step_seconds": state["timings"],
        "master_restarts_during_start": restarts,
        "stop_seconds": round(stop_seconds, 2),
        "held": held,
        "fleet_events": events,
        "settle_seconds": settle,
        "sample_seconds": sample,
        "per_hollow_node": per_node,
        "master": master,
        "groups": usage,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--nodes", type=int, action="append", help="node counts (repeatable) [10, 50]")
    parser.add_argument("--repeat", type=int, default=1, help="starts of each node count, one after another")
    parser.add_argument("--wave", type=int, default=None, help="node_start_wave [the default: sized to the host]")
    parser.add_argument("--provider", choices=["local", "preexisting"], default="local")
    parser.add_argument("--settle", type=float, default=30, help="seconds after Ready before sampling")
    parser.add_argument("--sample", type=float, default=60, help="seconds of CPU sampling (0: none)")
    parser.add_argument("--engine", action="append", choices=["kubemark", "fleet"], help="node engines, in turn [kubemark]")
    parser.add_argument("--fleet-processes", type=int, default=1, help="fleet processes sharing the nodes")
    parser.add_argument("--run", action="append", metavar="ENGINE:NODES[:P]",
                        help="one run (repeatable), instead of --nodes x --engine: e.g. kubemark:100, fleet:3000:2")
    args = parser.parse_args()
    runs = _runs(args, parser)
    binaries = bin_dir()
    machine = {"cpus": psutil.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1)}
    RESULTS.mkdir(exist_ok=True)
    sshd = SSHServer() if args.provider == "preexisting" else None
    if sshd is not None:
        sshd.start()
    results = []
    try:
        for engine, nodes, fleet_processes, other_binaries in runs:
            for attempt in range(1, args.repeat + 1):
                result = run(nodes, provider=args.provider, wave=args.wave, settle=args.settle, sample=args.sample,
                             bin_dir=other_binaries or str(binaries), sshd=sshd, engine=engine,
                             fleet_processes=fleet_processes)
                result["bin_dir"] = other_binaries or str(binaries)
                result["machine"] = machine
                result["attempt"] = attempt
                result["when"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
                stamp = result["when"].replace(":", "")
                path = RESULTS / f"start-to-ready-{args.provider}-{engine}-{nodes}-{stamp}-{attempt}.json"
                path.write_text(json.dumps(result, indent=1))
                node = result["per_hollow_node"]
                restarted = {n: r for n, r in result["master_restarts_during_start"].items() if r}
                cost = f"; per node {node['millicpu']} mCPU, {node['pss_mib']} MiB PSS" if args.sample > 0 else ""
                apiserver = result["master"]["kube-apiserver"]
                if args.sample > 0 and apiserver["millicpu"] is not None:
                    cost += f"; kube-apiserver {apiserver['millicpu']:.0f} mCPU, {apiserver['pss_mib']:.0f} MiB PSS"
                print(
                    f"{args.provider} {engine} {nodes} hollow nodes (run {attempt}/{args.repeat}, wave {result['wave']}): "
                    f"Ready {result['start_to_ready_seconds']}s after start{cost}; master restarts {restarted or 0}; "
                    f"held {'yes' if result['held']['held'] else 'no'}; stop {result['stop_seconds']}s  [{path}]",
                    flush=True,
                )
                results.append(result)
        if args.sample > 0:
            print(_table(results, str(binaries)))
        if dropped := [r for r in results if r["fleet_events"].get("dropped")]:
            raise SystemExit("FAIL: kubelet Events dropped at rest in " + ", ".join(
                f"fleet {r['nodes']} (run {r['attempt']}): {r['fleet_events']['dropped']}" for r in dropped))
    finally:
        if sshd is not None:
            sshd.cleanup()


if __name__ == "__main__":
    main()
