"""The commands of the measuring half: run a workload, check the hollow nodes'
fidelity, compare two runs."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from kubemark_up import config as config_mod
from kubemark_up.cli.app import NameOption, out, pairs, raise_interrupt, ui

if TYPE_CHECKING:
    from kubemark_up.run.fidelity.analysis import Report

SLO_VIOLATED = 3  # run: measured, and an SLO does not hold


def run_command(
    workload: Annotated[str, typer.Argument(
        help="density, load, configmap-churn, cr-churn, watch-storm, flunder-churn, flunder-watch or http2-baseline.")],
    name: NameOption = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Write one JSON per measurement and report.html here.")] = None,
    pods_per_node: Annotated[int | None, typer.Option(help="Pods per Ready node [default: 30].")] = None,
    rate: Annotated[float | None, typer.Option(help="Pods (or objects) per second [default: 10].")] = None,
    option: Annotated[list[str] | None, typer.Option("--set", help="A workload option, KEY=VALUE (repeatable).")] = None,
    closed_loop: Annotated[bool, typer.Option(
        "--closed-loop", help="configmap-churn, cr-churn, flunder-churn: W workers (--set workers=W) create, update, delete.")] = False,
    measure: Annotated[list[str] | None, typer.Option(help="Take only these measurements (repeatable) [default: all].")] = None,
    slo: Annotated[list[str] | None, typer.Option(help="An SLO threshold in seconds, NAME=SECONDS (repeatable).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds the whole run may take.")] = 1800,
    interval: Annotated[float, typer.Option(help="Seconds between scrapes of /metrics and samples.")] = 10,
    max_objects: Annotated[int, typer.Option(help="Refuse a run that would make more objects.")] = 100_000,
) -> None:
    """Load the master with a workload, measure it against the scalability SLOs and
    delete what the run made (also on Ctrl-C). Exits 0 when every SLO holds, 3 when one
    does not."""
    from kubemark_up.run import runner
    from kubemark_up.run.reports import html, summary

    options: dict[str, Any] = dict(pairs(option, "--set"))
    if pods_per_node is not None:
        options["pods_per_node"] = pods_per_node
    if rate is not None:
        options["rate"] = rate
    if closed_loop:
        options["closed_loop"] = True
    thresholds = {}
    for key, value in pairs(slo, "--slo").items():
        try:
            thresholds[key] = float(value.removesuffix("s"))
        except ValueError:
            raise config_mod.ConfigError(f"--slo {key}: {value!r} is not a number of seconds") from None
    request = runner.RunRequest(
        cluster=config_mod.cluster_name(name), home=config_mod.home_dir(), workload=workload, options=options,
        measurements=measure or None, slos=thresholds, out=out_dir, timeout=timeout, interval=interval,
        max_objects=max_objects,
    )
    runner.check_request(request)
    signal.signal(signal.SIGTERM, raise_interrupt)
    outcome = runner.run(request, ui)
    out.print(summary.slo_table(outcome.results))
    out.print(summary.figures_table(outcome.results, outcome.meta))
    if out_dir is not None:
        written = html.write_all(out_dir.absolute(), outcome.meta, outcome.results)
        out.print(f"{len(written)} file(s) in {out_dir.absolute()}")
    if not outcome.ok:
        failed = [s.name for r in outcome.results for s in r.slos if not s.ok]
        ui.error(f"SLO violated: {', '.join(failed)}")
        raise typer.Exit(SLO_VIOLATED)


def fidelity_command(
    name: NameOption = None,
    minutes: Annotated[float, typer.Option(help="Minutes counted (watches re-open every 5-10 min: 20+ judges them).")] = 10,
    settle: Annotated[float, typer.Option(help="Seconds waited before counting, past the start-up burst.")] = 30,
    tolerance: Annotated[str, typer.Option(help="How far a rate may be from its reference.")] = "10%",
    reference: Annotated[Path | None, typer.Option(
        "--reference", help="Judge against this reference file [default: the packaged reference.yaml].")] = None,
    out_file: Annotated[Path | None, typer.Option("--out", help="Write the report as JSON here.")] = None,
) -> None:
    """Judge the hollow nodes' traffic over a window against a real node's, from the
    apiserver's audit log (a cluster started with --audit-nodes): every node of the
    cluster heard from throughout, requests per node and minute, open watches and
    connections per node, requests per pod lifecycle when pods churned in the window,
    and the answers that were not 2xx. Exits 3 when something is outside the
    reference, 1 when the window judged nothing."""
    from kubemark_up.errors import RunError
    from kubemark_up.run.fidelity.measure import measure
    from kubemark_up.run.fidelity.tables import tables
    from kubemark_up.run.reports.compare import threshold_of

    if minutes <= 0 or settle < 0:
        raise config_mod.ConfigError("--minutes must be above 0 and --settle not below 0")
    limit = threshold_of(tolerance)
    signal.signal(signal.SIGTERM, raise_interrupt)
    report = measure(config_mod.cluster_name(name), config_mod.home_dir(), ui, minutes=minutes, settle=settle,
                     tolerance=limit, reference=reference)
    if out_file is not None:
        out_file.write_text(json.dumps(report.to_json(), indent=1, default=str))
    if report.judged == 0:
        raise RunError(f"the window judged nothing: no request of the cluster's {report.nodes} hollow node(s) reached "
                       f"the audit log between {report.start} and {report.end} (are they running? kubemark-up status)")
    for part in tables(report):
        out.print(part)
    if out_file is not None:
        out.print(f"report in {out_file.absolute()}")
    if not report.ok:
        ui.error(f"outside the reference (±{limit:.0%} on rates, exact on open watches and connections): "
                 + _fidelity_failures(report))
        raise typer.Exit(SLO_VIOLATED)


def _fidelity_failures(report: Report) -> str:
    """What failed, in a few words: the nodes by name, the rest by count."""
    failing = [n.name for n in report.failing_nodes]
    parts = [f"node(s) {', '.join(failing[:5])}{' ...' if len(failing) > 5 else ''}"] if failing else []
    life = report.lifecycle
    for label, rows in (("request bucket(s)", report.requests), ("open-watch row(s)", report.watches),
                        ("connection row(s)", report.connections),
                        ("per-pod bucket(s)", life.requests if life else []),
                        ("timing row(s)", life.timing if life else [])):
        if count := sum(1 for row in rows if row.verdict == "fail"):
            parts.append(f"{count} {label}")
    return ", ".join(parts)


def compare_command(
    old: Annotated[Path, typer.Argument(help="The result folder of the earlier run (run --out).")],
    new: Annotated[Path, typer.Argument(help="The result folder of the later run.")],
    threshold: Annotated[str, typer.Option(help="How much worse a figure may get.")] = "10%",
    html_file: Annotated[Path | None, typer.Option("--html", help="Also write the comparison here as HTML.")] = None,
) -> None:
    """Compare two runs' results figure by figure. Exits 3 when a figure got worse by
    more than the threshold (or an SLO that held now fails), 0 otherwise."""
    from kubemark_up.run.reports import compare as compare_mod
    from kubemark_up.run.reports import results as results_mod

    limit = compare_mod.threshold_of(threshold)
    rows = compare_mod.compare(old, new, limit)
    for difference in compare_mod.differences(old, new):
        ui.warn(f"the runs differ in {difference}")
    table = Table("measurement", "figure", "old", "new", "change", "", box=None, pad_edge=False)
    from kubemark_up.run.reports.summary import fmt

    for row in rows:
        verdict = Text("worse", style="bold red") if row.worse else Text("better", style="green") if row.better else Text("")
        table.add_row(row.measurement, row.figure, fmt(row.old, row.unit), fmt(row.new, row.unit),
                      compare_mod.change_text(row), verdict)
    out.print(table)
    if html_file is not None:
        results_mod.write_text(html_file.absolute(), compare_mod.html(old, new, rows, limit))
        out.print(f"written: {html_file.absolute()}")
    worse = [f"{r.measurement} {r.figure}" for r in rows if r.worse]
    if worse:
        ui.error(f"{len(worse)} figure(s) worse by more than {threshold}: {', '.join(worse[:5])}"
                 + (" ..." if len(worse) > 5 else ""))
        raise typer.Exit(SLO_VIOLATED)
