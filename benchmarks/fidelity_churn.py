"""Benchmark: the fidelity reference's pod churn on hollow nodes, beside the real node's.

    python3 benchmarks/fidelity_churn.py [--engine fleet] [--engine kubemark] [--pods 30]

For each engine in turn, in one run: a local cluster of one hollow node with
audit_nodes on, and on it the churn the reference measured on the real node
(tests/support/nodetraffic.churn: PODS pause pods with a projected token, a ConfigMap
and a Secret, made 2 s apart, held Running 30 s after the last, deleted 2 s apart,
waited out), counted from the apiserver's audit log by the code that counted the real
node's. Then one table: requests per pod and bound -> Running p50/p99, the reference's
(kubemark_up/run/fidelity/reference.yaml, the real kubelet) beside each engine's, and
each engine's CPU per pod lifecycle: the hollow node's processes' CPU time over the
churn, less their rate at rest (a minute measured before it) over as long, per pod.
Results: benchmarks/results/fidelity-churn-TIME.json and the table on stdout. Exit 0,
1 when a cluster did not start or the churn did not complete.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import yaml
from harness import CLI, bin_dir, process_pids
from rich.console import Console
from rich.table import Table

from tests.support import nodetraffic

REFERENCE = Path(__file__).resolve().parent.parent / "kubemark_up" / "run" / "fidelity" / "reference.yaml"
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class HollowNode:
    """What nodetraffic.churn asks of a node, for a kubemark-up cluster of one hollow node."""

    cli: CLI
    name: str
    registry: str = "registry.k8s.io"  # a hollow node pulls nothing: any name will do

    @property
    def kubeconfig(self) -> Path:
        return self.cli.home / self.name / "kubeconfig.kubemark"

    @property
    def audit_log(self) -> Path:
        return self.cli.home / self.name / "logs" / "audit.log"

    def kubectl(self, *args: str, timeout: float = 60):
        import subprocess

        return subprocess.run(["kubectl", "--kubeconfig", str(self.kubeconfig), *args], capture_output=True, text=True,
                              timeout=timeout)


def measure(engine: str, pods: int, binaries: Path, progress=print) -> dict:
    """One engine's churn: per-pod requests by bucket, and bound -> Running times."""
    with tempfile.TemporaryDirectory(prefix=f"kmup-churn-{engine}-") as tmp:
        cli = CLI(home=Path(tmp), bin_dir=binaries)
        node = HollowNode(cli=cli, name="churn")
        started = cli.run("start", "--name", node.name, "--nodes", "1", "--node-engine", engine, "--audit-nodes",
                          timeout=900)
        try:
            if started.returncode != 0:
                raise SystemExit(f"fidelity_churn: {engine}: start failed: {started.stderr.strip()[-1500:]}")
            # `kubemark-up fidelity` judges the same churn: its window opens before the
            # first pod and closes after the last is gone.
            report = Path(tmp) / "fidelity.json"
            judge = cli.popen("fidelity", "--name", node.name, "--minutes", str(judge_minutes(pods)),
                              "--settle", str(JUDGE_SETTLE), "--out", str(report))
            pids = node_pids(cli, node.name)
            rest_began, rest_cpu = time.monotonic(), cpu_seconds(pids)
            time.sleep(REST_SECONDS)
            at_rest = (cpu_seconds(pids) - rest_cpu) / (time.monotonic() - rest_began)
            progress(f"{engine}: one hollow node Ready; churning {pods} pods")
            churn_began, churn_cpu = time.monotonic(), cpu_seconds(pids)
            life = nodetraffic.churn(node, pods, progress=lambda line: progress(f"{engine}: {line}"))
            churn_seconds = time.monotonic() - churn_began
            cpu_per_pod = (cpu_seconds(pids) - churn_cpu - at_rest * churn_seconds) / pods
            judge.communicate(timeout=judge_minutes(pods) * 60 + 300)
            verdict = json.loads(report.read_text()) if report.exists() else {}
        finally:
            cli.run("stop", "--name", node.name, "--purge", timeout=600)
    lifecycle = verdict.get("lifecycle") or {}
    return {
        "per_pod": {" ".join(part for part in key if part): round(n / pods, 3) for key, n in sorted(life.counts.items())},
        "bound_to_running": life.bound_to_running,
        "cpu_ms_per_pod": round(cpu_per_pod * 1000, 1), "cpu_at_rest_mcpu": round(at_rest * 1000, 2),
        "fidelity": {"exit": judge.returncode, "judged": lifecycle.get("judged"), "short": lifecycle.get("short"),
                     "verdicts": {" ".join(p for p in (b["verb"], b["resource"], b["subresource"]) if p): b["verdict"]
                                  for b in lifecycle.get("requests", [])},
                     "timing": {t["figure"]: t["verdict"] for t in lifecycle.get("timing", [])}},
    }


JUDGE_SETTLE = 10
REST_SECONDS = 60  # the hollow node's CPU at rest, measured before the churn (inside the judge's settle and window)


def node_pids(cli: CLI, name: str) -> list[int]:
    """The hollow node's processes (the fleet's, or stock kubemark's), from the cluster's state."""
    state = json.loads((cli.home / name / "state.json").read_text())
    return [pid for role, pid in process_pids(state).values() if role != "master"]


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def judge_minutes(pods: int) -> float:
    """The fidelity window for a churn of `pods` after the minute at rest: made and
    deleted 2 s apart, held 30 s, the last requests 10 s after; with a minute to spare."""
    return round((REST_SECONDS + 4 * pods + 30 + 10 + 60) / 60 + 1, 1)


def reference_rows(reference: dict) -> tuple[dict[str, float], dict[str, float]]:
    lifecycle = reference["lifecycle"]
    rows = {" ".join(part for part in (r["component"], r["verb"], r["resource"], r.get("subresource", "")) if part):
            r["per_pod"] for r in lifecycle["requests"]}
    timing = lifecycle["timing"]
    return rows, {"p50": timing["bound_to_running_p50"], "p99": timing["bound_to_running_p99"]}


def timing(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None}
    return {"p50": round(nodetraffic.percentile(values, 50), 3), "p99": round(nodetraffic.percentile(values, 99), 3)}


def table(reference: dict, measured: dict[str, dict], pods: int) -> Table:
    ref_rows, ref_timing = reference_rows(reference)
    out = Table(title=f"requests per pod, {pods} pods churned as the reference's were")
    out.add_column("request")
    out.add_column("real node (reference)", justify="right")
    for engine in measured:
        out.add_column(engine, justify="right")
    keys = sorted(set(ref_rows).union(*(m["per_pod"] for m in measured.values())))

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:g}"

    for key in keys:
        out.add_row(key, cell(ref_rows.get(key)), *(cell(m["per_pod"].get(key)) for m in measured.values()))
    for q in ("p50", "p99"):
        out.add_row(f"bound -> Running {q} (s)", cell(ref_timing[q]),
                    *(cell(timing(m["bound_to_running"])[q]) for m in measured.values()))
    out.add_row("CPU per pod lifecycle (ms)", "-", *(cell(m["cpu_ms_per_pod"]) for m in measured.values()))
    out.add_row("kubemark-up fidelity: lifecycle rows failed", "",
                *(", ".join(k for k, v in {**m["fidelity"]["verdicts"], **m["fidelity"]["timing"]}.items()
                            if v == "fail") or "none" for m in measured.values()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--engine", action="append", choices=["fleet", "kubemark"],
                        help="a node engine to measure (repeatable) [fleet and kubemark]")
    parser.add_argument("--pods", type=int, default=None, help="pods churned [the reference's count]")
    parser.add_argument("--reference", type=Path, default=REFERENCE, help="the reference [the packaged one]")
    args = parser.parse_args()
    reference = yaml.safe_load(args.reference.read_text())
    pods = args.pods or int(reference["lifecycle"]["pods"])
    if pods <= 0:
        raise SystemExit("fidelity_churn: --pods must be positive")
    engines = args.engine or ["fleet", "kubemark"]
    binaries = bin_dir()
    measured = {engine: measure(engine, pods, binaries) for engine in engines}
    console = Console(width=120)
    console.print(table(reference, measured, pods))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"fidelity-churn-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps({"pods": pods, "reference": str(args.reference), "measured": measured}, indent=1) + "\n")
    console.print(f"results: {out}")


if __name__ == "__main__":
    main()
