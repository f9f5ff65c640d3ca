"""What the user watches: one status line per step, ending ✓ or ✗ by itself, and
progress bars for long waits. Everything here goes to stderr, so that stdout
carries only results (paths, JSON) that scripts can read. Texts are plain: a
bracket in a path or a name is printed, never taken for rich markup."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class UI:
    def __init__(self, console: Console | None = None) -> None:
        # soft_wrap: a path in a status line stays whole when stderr is not a terminal.
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        started = time.monotonic()
        title = escape(title)
        try:
            with self.console.status(f"{title} ...", spinner="dots"):
                yield
        except BaseException:
            self.console.print(f"[red]✗[/red] {title} [dim]({time.monotonic() - started:.1f}s)[/dim]")
            raise
        self.console.print(f"[green]✓[/green] {title} [dim]({time.monotonic() - started:.1f}s)[/dim]")

    def info(self, message: str) -> None:
        self.console.print(message, markup=False)

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]![/yellow] {escape(message)}")

    def error(self, message: str, detail: str = "") -> None:
        self.console.print(f"[red]error:[/red] {escape(message)}")
        if detail:
            self.console.print(detail, style="dim", markup=False)

    @contextmanager
    def counter(self, title: str, total: int, unit: str) -> Iterator[Callable[[int], None]]:
        """A progress bar for `total` things becoming done: done/total, rate, elapsed."""
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        task = progress.add_task(escape(title), total=total, rate="")
        started = time.monotonic()

        def update(done: int) -> None:
            elapsed = max(time.monotonic() - started, 1e-6)
            progress.update(task, completed=done, rate=f"{done / elapsed:.1f} {unit}/s")

        with progress:
            yield update

