"""The typer app and what its commands share: the result console, the option types,
the global flags, and main(), the one boundary where every error becomes one line
(and a detail block where there is one, such as a log tail) and an exit code;
--debug adds the traceback, never local variables."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from typer.exceptions import TyperException

from kubemark_up import __version__
from kubemark_up import config as config_mod
from kubemark_up.errors import KubemarkUpError
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


def check_output(output: str) -> None:
    if output not in ("text", "json"):
        raise config_mod.ConfigError(f"--output must be text or json, not {output!r}")


def resolve(
    *, flags: Mapping[str, Any] | None = None, config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> config_mod.Settings:
    """The settings (config.resolve), with the provider registry as its lookup of the
    providers' own settings: config, on the ground floor, imports no provider."""
    from kubemark_up.providers import registry

    return registry.resolve_settings(flags=flags, config_file=config_file, environ=environ)


def raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def pairs(items: list[str] | None, flag: str) -> dict[str, str]:
    pairs = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise config_mod.ConfigError(f"{flag} takes KEY=VALUE, not {item!r}")
        pairs[key.strip().replace("-", "_")] = value.strip()
    return pairs


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
