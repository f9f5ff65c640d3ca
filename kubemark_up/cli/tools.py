"""The commands that need no cluster: the hollow-node image, the Kubernetes binaries,
the installed providers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from kubemark_up import config as config_mod
from kubemark_up.cli.app import out, resolve, ui

image_app = typer.Typer(help="Build the hollow-node image (no Docker needed) and push it to a registry.",
                        no_args_is_help=True)
LayoutOption = Annotated[
    Path | None, typer.Option("--layout", help="The OCI image layout folder [default: <home>/images/kubemark-VERSION].")
]


@image_app.command("build")
def image_build(layout: LayoutOption = None) -> None:
    """Write the hollow-node image (kubemark and node-problem-detector) as an OCI image layout."""
    from kubemark_up import image

    built = image.build_for(resolve(flags={}), config_mod.home_dir(), ui, out=layout)
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

    settings, home = resolve(flags={}), config_mod.home_dir()
    folder = layout or image.default_layout(home, settings.kubernetes_version)
    built = image.read(folder) if (folder / "index.json").exists() else image.build_for(settings, home, ui, out=folder)
    crane = binaries_mod.tool("crane", settings, home, ui)
    with ui.step(f"push {built.digest[:19]}... to {reference}", long=True):
        pushed = image.push(built, reference, crane=crane, insecure=insecure)
    out.print(pushed)


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
    from kubemark_up import binaries

    for item in source or []:
        if item not in ("download", "build"):
            raise config_mod.ConfigError(f"--source must be download or build, not {item!r}")
    settings = resolve(flags={"bin_dir": bin_dir, "kubernetes_version": kubernetes_version})
    found = binaries.resolve(settings, config_mod.home_dir(), ui, sources=source or None, force=force)
    table = Table("binary", "version", "source", "path", box=None, pad_edge=False)
    for binary in found.values():
        table.add_row(binary.name, binaries.version_of(binary), binary.source, str(binary.path))
    out.print(table)


def providers_command() -> None:
    """List the installed providers."""
    from kubemark_up.providers.registry import available

    table = Table("provider", "package", "version", "entry point", box=None, pad_edge=False)
    for info in available():
        table.add_row(info.name, info.package, info.version, info.target)
    out.print(table)
