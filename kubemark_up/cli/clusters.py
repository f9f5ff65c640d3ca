"""The commands on one cluster: start, stop, status, pod-for-node, logs, env, and gc
of what clusters left behind. Each imports the cluster engine (and with it the
providers, the Kubernetes client) itself: --help and a usage error need none of it."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from kubemark_up import config as config_mod
from kubemark_up.cli.app import NameOption, OutputOption, check_output, out, raise_interrupt, resolve, ui
from kubemark_up.cli.render import print_json, print_location, print_started, print_status


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
    from kubemark_up import cluster

    settings = resolve(
        flags={"provider": provider, "name": name, "nodes": nodes, "bin_dir": bin_dir, "apiserver_port": apiserver_port,
               "node_engine": node_engine, "fleet_processes": fleet_processes, "audit_nodes": audit_nodes},
        config_file=config,
    )
    if dry_run:
        for line in cluster.plan(settings, config_mod.home_dir(), ui):
            out.print(line)
        return
    # SIGTERM is an interruption like Ctrl-C: start stops what it started, in order.
    signal.signal(signal.SIGTERM, raise_interrupt)
    ctx = cluster.start(settings, config_mod.home_dir(), ui)
    print_started(ctx, settings)


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
    from kubemark_up import cluster

    cluster_name = config_mod.cluster_name(name)
    signal.signal(signal.SIGTERM, raise_interrupt)
    done = cluster.stop(cluster_name, config_mod.home_dir(), ui, purge=purge, provider_name=provider,
                        fetch_logs=fetch_logs)
    if done:
        out.print(f"kubemark cluster '{cluster_name}' stopped ({'; '.join(done)})")
    else:
        out.print(f"kubemark cluster '{cluster_name}' is not running; nothing to stop")


UNHEALTHY = 3  # status: the report is right, the cluster is not


def status(name: NameOption = None, output: OutputOption = "text") -> None:
    """Master health, components with PIDs, hollow nodes Ready/total. Exits 0 when the
    master is healthy and every hollow node Ready, 3 when not."""
    from kubemark_up import cluster

    check_output(output)
    report = cluster.status(config_mod.cluster_name(name), config_mod.home_dir())
    if output == "json":
        print_json(report.to_json())
    else:
        print_status(report)
    if not report.healthy:
        raise typer.Exit(UNHEALTHY)


def pod_for_node(
    node: Annotated[str, typer.Argument(help="A hollow node's name or one of its addresses.")],
    name: NameOption = None,
    output: OutputOption = "text",
) -> None:
    """Where a hollow node really runs (for local: its processes and logs)."""
    from kubemark_up import cluster

    check_output(output)
    where = cluster.locate(config_mod.cluster_name(name), config_mod.home_dir(), node)
    if output == "json":
        print_json(where.to_json())
    else:
        print_location(where)


def logs(
    name: NameOption = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Folder to copy them into [default: ./kubemark-logs-NAME].")
    ] = None,
) -> None:
    """Copy every master component's and hollow node's log into one folder, whether or
    not start succeeded."""
    from kubemark_up import cluster

    cluster_name = config_mod.cluster_name(name)
    folder = (out_dir or Path(f"kubemark-logs-{cluster_name}")).absolute()
    written = cluster.collect_logs(cluster_name, config_mod.home_dir(), folder, ui)
    out.print(f"{len(written)} log file(s) of cluster '{cluster_name}' in {folder}")


def env_command(name: NameOption = None, output: OutputOption = "text") -> None:
    """Print the shell exports clusterloader2 (--provider=kubemark) and kubetest expect
    for this cluster: eval "$(kubemark-up env)"."""
    from kubemark_up import cluster
    from kubemark_up.cluster import envexport
    from kubemark_up.state import ClusterDir

    check_output(output)
    cdir = ClusterDir(config_mod.home_dir(), config_mod.cluster_name(name))
    info, state = cdir.load_info(), cdir.load()
    settings = cluster.recorded_settings(info)
    values = envexport.exports(cdir, info, state, settings)
    for note in envexport.notes(cdir, info, state, settings):
        ui.warn(note)
    if output == "json":
        print_json(values)
    else:
        sys.stdout.write(envexport.shell(values))


def gc_command(
    provider: Annotated[str, typer.Option(help="The provider whose resources to look for.")] = "gce",
    project: Annotated[str | None, typer.Option(help="gce: the project [default: gce.project of the settings].")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="A settings file (YAML).")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Delete what is listed.")] = False,
    all_owners: Annotated[bool, typer.Option(
        "--all-owners", help="Also other owners' (made from another home, user or machine) and unmarked ones.")] = False,
) -> None:
    """List the cloud resources kubemark-up marked for clusters that have no state here
    and were made from this home by this user; --yes deletes them."""
    import os

    from kubemark_up import cluster

    environ = dict(os.environ)
    if project:
        environ[config_mod.provider_env_prefix(provider) + "PROJECT"] = project
    settings = resolve(flags={"provider": provider}, config_file=config, environ=environ)
    found, skipped = cluster.gc(settings, config_mod.home_dir(), ui, delete=yes, all_owners=all_owners)
    for line in found + skipped:
        out.print(line)
    if not found:
        out.print("no resources of kubemark-up clusters without state here" + (" of this owner" if skipped else ""))
    elif not yes:
        out.print(f"{len(found)} resource(s); delete them with --yes")
    if skipped:
        out.print(f"{len(skipped)} resource(s) of other owners skipped; --all-owners includes them")

