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
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn


class StepStatus:
    """Handed to a step's block: set failed when it ends with problems but no exception."""

    failed = False


class UI:
    def __init__(self, console: Console | None = None) -> None:
        # soft_wrap: a path in a status line stays whole when stderr is not a terminal.
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)

    @contextmanager
    def step(self, title: str, *, long: bool = False) -> Iterator[StepStatus]:
        """A status line that ends ✓, or ✗ if the block raises or marks it failed. A long
        step (a build, an upload) where stderr is no terminal (a CI log) also prints a
        line as it begins, so that it does not look like a hang."""
        started = time.monotonic()
        title = escape(title)
        status = StepStatus()
        if long and not self.console.is_terminal:
            self.console.print(f"… {title}")
        try:
            with self.console.status(f"{title} ...", spinner="dots"):
                yield status
        except BaseException:
            self.console.print(f"[red]✗[/red] {title} [dim]({time.monotonic() - started:.1f}s)[/dim]")
            raise
        mark = "[red]✗[/red]" if status.failed else "[green]✓[/green]"
        self.console.print(f"{mark} {title} [dim]({time.monotonic() - started:.1f}s)[/dim]")

    def info(self, message: str) -> None:
        self.console.print(message, markup=False)

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]![/yellow] {escape(message)}")

    def error(self, message: str, detail: str = "") -> None:
        self.console.print(f"[red]error:[/red] {escape(message)}")
        if detail:
            self.console.print(detail, style="dim", markup=False)

    @contextmanager
    def counter(self, title: str, total: int) -> Iterator[Callable[..., None]]:
        """A progress bar for `total` things becoming done: done/total and elapsed (no
        rate: nodes become Ready in bursts, so a rate would say little and vary much).
        update(done) moves it; update(done, title=T) moves a second bar titled T, shown
        from its first update (pods Running beside nodes Ready)."""
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        tasks: dict[str, TaskID] = {}

        def update(done: int, title: str = title) -> None:
            if title not in tasks:
                tasks[title] = progress.add_task(escape(title), total=total)
            progress.update(tasks[title], completed=done)

        update(0)

        with progress:
            yield update
