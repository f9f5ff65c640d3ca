"""The kubemark-up command line. The only module that prints results and exits: every
error becomes one line (and a detail block where there is one, such as a log tail)
and an exit code; --debug adds the traceback, never local variables."""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.exceptions import TyperException

from kubemark_up import __version__, binaries, cluster
from kubemark_up import config as config_mod
from kubemark_up.errors import KubemarkUpError
from kubemark_up.providers import available, registry
from kubemark_up.ui import UI

app = typer.Typer(
    name="kubemark-up",
    help="Bring up Kubemark clusters (a real master plus hollow nodes), measure them, tear them down.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Help texts are plain: "[default: 10]" must be shown, not taken for rich markup.
    rich_markup_mode=None,
)
# Results go to stdout; when that is a pipe or a file, lines are not cut at 80 columns.
# markup=False: names, paths and errors are printed as they are, brackets and all.
out = Console(highlight=False, soft_wrap=True, markup=False, width=None if sys.stdout.isatty() else 240)
ui = UI()
_options = {"debug": False}

# No short flag: a scalability engineer reads `-n 100` as a node count.
NameOption = Annotated[
    str | None, typer.Option("--name", help="Cluster name [default: kubemark, or $KUBEMARK_UP_NAME].")
]
OutputOption = Annotated[str, typer.Option("--output", "-o", help="text or json.")]


def _version(value: bool) -> None:
    if value:
        out.print(f"kubemark-up {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error (anywhere on the line).")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    _options["debug"] = _options["debug"] or debug


def _check_output(output: str) -> None:
    if output not in ("text", "json"):
        raise config_mod.ConfigError(f"--output must be text or json, not {output!r}")


@app.command()
def start(
    provider: Annotated[str | None, typer.Option(help="Where the cluster runs [default: local].")] = None,
    name: NameOption = None,
    nodes: Annotated[int | None, typer.Option(help="Number of hollow nodes [default: 10].")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="A settings file (YAML).")] = None,
    bin_dir: Annotated[Path | None, typer.Option(help="A folder holding the Kubernetes binaries.")] = None,
    apiserver_port: Annotated[int | None, typer.Option(help="Port for kube-apiserver [default: a free one].")] = None,
    node_engine: Annotated[
        str | None, typer.Option(help="fleet (many nodes per process) or kubemark (stock, a process pair per node) [default: fleet].")
    ] = None,
    fleet_processes: Annotated[int | None, typer.Option(help="Fleet processes sharing the nodes [default: 1].")] = None,
    audit_nodes: Annotated[
        bool | None, typer.Option("--audit-nodes", help="Audit-log the nodes' requests (for fidelity) [default: off].")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what start would make; make nothing.")] = False,
) -> None:
    """Start a kubemark cluster and wait until every hollow node is Ready."""
    settings = config_mod.resolve(
        flags={"provider": provider, "name": name, "nodes": nodes, "bin_dir": bin_dir, "apiserver_port": apiserver_port,
               "node_engine": node_engine, "fleet_processes": fleet_processes, "audit_nodes": audit_nodes},
        config_file=config, provider_spec=registry.spec, provider_names=registry.names,
    )
    if dry_run:
        for line in cluster.plan(settings, config_mod.home_dir(), ui):
            out.print(line)
        return
    # SIGTERM is an interruption like Ctrl-C: start stops what it started, in order.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    ctx = cluster.start(settings, config_mod.home_dir(), ui)
    total = sum(ctx.state.timings.values())
    name, count = ctx.info.name, len(ctx.state.nodes)
    if not count:
        summary = "a master-only cluster (no hollow nodes)"
    elif ctx.state.nodes_ready is not None and ctx.state.nodes_ready < count:
        summary = f"{ctx.state.nodes_ready} of {count} hollow nodes Ready (allowed_not_ready {settings.allowed_not_ready})"
    else:
        summary = f"{count} hollow nodes Ready"
    out.print(
        f"kubemark cluster '{name}' is up: {summary}, {total:.1f}s after start\n"
        f"  API endpoint: {ctx.state.endpoint}\n"
        f"  kubeconfig:   {ctx.dir.kubeconfig}\n"
        f"  try:          kubectl --kubeconfig {ctx.dir.kubeconfig} get nodes\n"
        f"  stop with:    kubemark-up stop --name {name}"
    )


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@app.command()
def stop(
    name: NameOption = None,
    purge: Annotated[bool, typer.Option(help="Remove the logs too.")] = False,
    provider: Annotated[
        str | None, typer.Option(help="Fail unless the cluster was started by this provider.")
    ] = None,
    fetch_logs: Annotated[
        bool, typer.Option(help="Copy a remote master's logs here before removing its files.")
    ] = True,
) -> None:
    """Stop everything start made and free its ports. Safe to repeat."""
    cluster_name = config_mod.cluster_name(name)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    done = cluster.stop(cluster_name, config_mod.home_dir(), ui, purge=purge, provider_name=provider,
                        fetch_logs=fetch_logs)
    if done:
        out.print(f"kubemark cluster '{cluster_name}' stopped ({'; '.join(done)})")
    else:
        out.print(f"kubemark cluster '{cluster_name}' is not running; nothing to stop")


UNHEALTHY = 3  # status: the report is right, the cluster is not


@app.command()
def status(name: NameOption = None, output: OutputOption = "text") -> None:
    """Master health, components with PIDs, hollow nodes Ready/total. Exits 0 when the
    master is healthy and every hollow node Ready, 3 when not."""
    _check_output(output)
    report = cluster.status(config_mod.cluster_name(name), config_mod.home_dir())
    if output == "json":
        print(json.dumps(report, indent=1))
    else:
        _print_status(report)
    if not report["healthy"]:
        raise typer.Exit(UNHEALTHY)


def _print_status(report: dict) -> None:
    out.print(
        Text(f"cluster {report['name']} ({report['provider']}, {report['phase']}), master "),
        _yes(report["master"]["healthy"], "healthy", "unhealthy"),
        sep="",
    )
    out.print(
        f"  endpoint:   {report['endpoint']}\n  kubeconfig: {report['kubeconfig']}\n"
        f"  logs:       {report['logs']} on {report['master_host']}"
    )
    table = Table("component", "pid", "running", "healthy", "restarts", box=None, pad_edge=False)
    for component in report["master"]["components"]:
        table.add_row(
            component["name"], str(component["pid"] or "-"), _yes(component["running"]),
            _yes(component["healthy"]), str(component["restarts"]),
        )
    out.print(table)
    nodes = report["nodes"]
    ready = "unknown" if nodes["ready"] is None else str(nodes["ready"])
    out.print(
        f"hollow nodes: {ready}/{nodes['total']} Ready, {nodes['processes_running']}/{nodes['total']} running"
        + (f" ({nodes['error']})" if nodes["error"] else "")
    )


def _yes(value: bool, yes: str = "yes", no: str = "no") -> Text:
    return Text(yes, style="green") if value else Text(no, style="red")


@app.command("pod-for-node")
def pod_for_node(
    node: Annotated[str, typer.Argument(help="A hollow node's name or one of its addresses.")],
    name: NameOption = None,
    output: OutputOption = "text",
) -> None:
    """Where a hollow node really runs (for local: its processes and logs)."""
    _check_output(output)
    where = cluster.locate(config_mod.cluster_name(name), config_mod.home_dir(), node)
    if output == "json":
        print(json.dumps(where, indent=1))
        return
    out.print(f"{where['node']}: {where['where']}")
    for part in where["processes"]:
        if "process" in part:
            state = "running" if part["running"] else "not running"
            out.print(f"  {part['process']:<8} pid {part['pid']}  {state}  log {part['log']}")
        else:
            out.print(f"  {part['container']:<30} {part['state']:<10} restarts {part['restarts']}  {part['logs']}")


@app.command()
def logs(
    name: NameOption = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Folder to copy them into [default: ./kubemark-logs-NAME].")
    ] = None,
) -> None:
    """Copy every master component's and hollow node's log into one folder, whether or
    not start succeeded."""
    cluster_name = config_mod.cluster_name(name)
    folder = (out_dir or Path(f"kubemark-logs-{cluster_name}")).absolute()
    written = cluster.collect_logs(cluster_name, config_mod.home_dir(), folder, ui)
    out.print(f"{len(written)} log file(s) of cluster '{cluster_name}' in {folder}")


def _pairs(items: list[str] | None, flag: str) -> dict[str, str]:
    pairs = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise config_mod.ConfigError(f"{flag} takes KEY=VALUE, not {item!r}")
        pairs[key.strip().replace("-", "_")] = value.strip()
    return pairs


SLO_VIOLATED = 3  # run: measured, and an SLO does not hold


@app.command("run")
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
    from kubemark_up.run.reports import results as results_mod
    from kubemark_up.run.reports import summary

    options: dict[str, Any] = dict(_pairs(option, "--set"))
    if pods_per_node is not None:
        options["pods_per_node"] = pods_per_node
    if rate is not None:
        options["rate"] = rate
    if closed_loop:
        options["closed_loop"] = True
    thresholds = {}
    for key, value in _pairs(slo, "--slo").items():
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
    signal.signal(signal.SIGTERM, _raise_interrupt)
    outcome = runner.run(request, ui)
    out.print(summary.slo_table(outcome.results))
    out.print(summary.figures_table(outcome.results, outcome.meta))
    if out_dir is not None:
        written = results_mod.write_all(out_dir.absolute(), outcome.meta, outcome.results)
        out.print(f"{len(written)} file(s) in {out_dir.absolute()}")
    if not outcome.ok:
        failed = [s.name for r in outcome.results for s in r.slos if not s.ok]
        ui.error(f"SLO violated: {', '.join(failed)}")
        raise typer.Exit(SLO_VIOLATED)


@app.command("fidelity")
def fidelity_command(
    name: NameOption = None,
    minutes: Annotated[float, typer.Option(help="Minutes counted (watches re-open every 5-10 min: 20+ judges them).")] = 10,
    settle: Annotated[float, typer.Option(help="Seconds waited before counting, past the start-up burst.")] = 30,
    tolerance: Annotated[str, typer.Option(help="How far a rate may be from its reference.")] = "10%",
    out_file: Annotated[Path | None, typer.Option("--out", help="Write the report as JSON here.")] = None,
) -> None:
    """Count the hollow nodes' requests per node and minute, and their open watches, from
    the apiserver's audit log (a cluster started with --audit-nodes), beside the rates of
    a real node. Exits 3 when a rate is off by more than the tolerance or an open-watch
    count is not exact."""
    from kubemark_up.run.fidelity.measure import measure

    if minutes <= 0 or settle < 0:
        raise config_mod.ConfigError("--minutes must be above 0 and --settle not below 0")
    from kubemark_up.run.reports.compare import threshold_of

    limit = threshold_of(tolerance)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    report = measure(config_mod.cluster_name(name), config_mod.home_dir(), ui, minutes=minutes, settle=settle,
                     tolerance=limit)
    table = Table("component", "verb", "resource", "sub", "count", "/node/min", "steady", "reference", "verdict",
                  title=f"requests of {report.nodes} nodes over {report.minutes:g} min (steady: WATCH, open per node "
                        "over the mean lifetime)")
    for b in report.requests:
        table.add_row(b.component, b.verb, b.resource, b.subresource, str(b.count), f"{b.rate:.3f}",
                      "" if b.steady_rate is None else f"{b.steady_rate:.3f}",
                      "-" if b.reference is None else f"{b.reference:g}", b.verdict)
    out.print(table)
    watches = Table("component", "resource", "open", "per node", "reference", "verdict", title="open watches")
    for w in report.watches:
        watches.add_row(w.component, w.resource, str(w.open), f"{w.per_node:g}", str(w.reference), w.verdict)
    out.print(watches)
    if out_file is not None:
        out_file.write_text(json.dumps(report.to_json(), indent=1))
        out.print(f"report in {out_file.absolute()}")
    if not report.ok:
        ui.error(f"outside the reference (±{limit:.0%} on rates, exact on open watches)")
        raise typer.Exit(SLO_VIOLATED)


@app.command("compare")
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


@app.command("env")
def env_command(name: NameOption = None, output: OutputOption = "text") -> None:
    """Print the shell exports clusterloader2 (--provider=kubemark) and kubetest expect
    for this cluster: eval "$(kubemark-up env)"."""
    from kubemark_up.cluster import envexport
    from kubemark_up.state import ClusterDir

    _check_output(output)
    cdir = ClusterDir(config_mod.home_dir(), config_mod.cluster_name(name))
    info, state = cdir.load_info(), cdir.load()
    settings = cluster.recorded_settings(info)
    values = envexport.exports(cdir, info, state, settings)
    for note in envexport.notes(cdir, info, state, settings):
        ui.warn(note)
    if output == "json":
        print(json.dumps(values, indent=1))
    else:
        sys.stdout.write(envexport.shell(values))


image_app = typer.Typer(help="Build the hollow-node image (no Docker needed) and push it to a registry.",
                        no_args_is_help=True)
app.add_typer(image_app, name="image")
LayoutOption = Annotated[
    Path | None, typer.Option("--layout", help="The OCI image layout folder [default: <home>/images/kubemark-VERSION].")
]


@image_app.command("build")
def image_build(layout: LayoutOption = None) -> None:
    """Write the hollow-node image (kubemark and node-problem-detector) as an OCI image layout."""
    from kubemark_up import image

    built = image.build_for(config_mod.resolve(flags={}, provider_spec=registry.spec, provider_names=registry.names),
                              config_mod.home_dir(), ui, out=layout)
    out.print(f"{built.layout} {built.digest}")


@image_app.command("push")
def image_push(
    reference: Annotated[str, typer.Argument(help="Where to push it: registry/repository[:tag].")],
    layout: LayoutOption = None,
    insecure: Annotated[bool, typer.Option(help="Allow a registry without TLS.")] = False,
) -> None:
    """Push the hollow-node image (built first if there is none) over the OCI distribution API; prints REF@DIGEST."""
    from kubemark_up import binaries as binaries_mod
    from kubemark_up import image

    settings = config_mod.resolve(flags={}, provider_spec=registry.spec, provider_names=registry.names)
    home = config_mod.home_dir()
    folder = layout or image.default_layout(home, settings.kubernetes_version)
    built = image.read(folder) if (folder / "index.json").exists() else image.build_for(settings, home, ui, out=folder)
    crane = binaries_mod.tool("crane", settings, home, ui)
    with ui.step(f"push {built.digest[:19]}... to {reference}", long=True):
        pushed = image.push(built, reference, crane=crane, insecure=insecure)
    out.print(pushed)


@app.command("binaries")
def binaries_command(
    source: Annotated[
        list[str] | None,
        typer.Option("--source", "-s", help="download and/or build (repeatable) [default: download, build]."),
    ] = None,
    bin_dir: Annotated[Path | None, typer.Option(help="Use the binaries in this folder.")] = None,
    kubernetes_version: Annotated[str | None, typer.Option(help="Kubernetes release [default: v1.36.3].")] = None,
    force: Annotated[bool, typer.Option(help="Fetch or build again even if cached.")] = False,
) -> None:
    """Fetch or build the Kubernetes binaries and print what was resolved."""
    for item in source or []:
        if item not in ("download", "build"):
            raise config_mod.ConfigError(f"--source must be download or build, not {item!r}")
    settings = config_mod.resolve(flags={"bin_dir": bin_dir, "kubernetes_version": kubernetes_version},
                                  provider_spec=registry.spec, provider_names=registry.names)
    found = binaries.resolve(settings, config_mod.home_dir(), ui, sources=source or None, force=force)
    table = Table("binary", "version", "source", "path", box=None, pad_edge=False)
    for binary in found.values():
        table.add_row(binary.name, binaries.version_of(binary), binary.source, str(binary.path))
    out.print(table)


@app.command("gc")
def gc_command(
    provider: Annotated[str, typer.Option(help="The provider whose resources to look for.")] = "gce",
    project: Annotated[str | None, typer.Option(help="gce: the project [default: gce.project of the settings].")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="A settings file (YAML).")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Delete what is listed.")] = False,
) -> None:
    """List the cloud resources kubemark-up marked for clusters that have no state here; --yes deletes them."""
    import os

    environ = dict(os.environ)
    if project:
        environ[config_mod.provider_env_prefix(provider) + "PROJECT"] = project
    settings = config_mod.resolve(flags={"provider": provider}, config_file=config, environ=environ,
                                  provider_spec=registry.spec, provider_names=registry.names)
    found = cluster.gc(settings, config_mod.home_dir(), ui, delete=yes)
    for line in found:
        out.print(line)
    if not found:
        out.print("no resources of kubemark-up clusters without state here")
    elif not yes:
        out.print(f"{len(found)} resource(s); delete them with --yes")


@app.command("providers")
def providers_command() -> None:
    """List the installed providers."""
    table = Table("provider", "package", "version", "entry point", box=None, pad_edge=False)
    for info in available():
        table.add_row(info.name, info.package, info.version, info.target)
    out.print(table)


def _fail(message: str, detail: str, code: int) -> NoReturn:
    ui.error(message, detail)
    sys.exit(code)


def main() -> None:
    # The Kubernetes client's urllib3 warns on every retried connection; a wait that
    # expects the apiserver to come and go says so itself. paramiko logs what its
    # callers are told anyway.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    # --debug is taken wherever it stands, before or after the command.
    args = sys.argv[1:]
    if "--debug" in args:
        _options["debug"] = True
        args = [arg for arg in args if arg != "--debug"]
    try:
        result = app(args=args, standalone_mode=False)
    except KubemarkUpError as exc:
        if _options["debug"]:
            ui.console.print_exception(show_locals=False)
        _fail(exc.message, exc.detail, exc.exit_code)
    except TyperException as exc:  # a usage error: bad option, missing argument
        _fail(exc.format_message(), "", getattr(exc, "exit_code", 2))
    except (KeyboardInterrupt, typer.Abort):
        _fail("interrupted", "", 130)
    except Exception as exc:  # a bug: say so in one line, the traceback only on --debug
        if _options["debug"]:
            ui.console.print_exception(show_locals=False)
        _fail(f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", "", 1)
    if result == 130:  # typer turns KeyboardInterrupt (and our SIGTERM) into this code
        _fail("interrupted", "", 130)
    sys.exit(result if isinstance(result, int) else 0)
