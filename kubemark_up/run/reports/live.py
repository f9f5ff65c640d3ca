"""The live view of a run, on stderr: phase, objects, the achieved rate and each
measurement's line (the worst latency so far), redrawn twice a second; where stderr
is no terminal (a CI log), printed every LOG_EVERY seconds instead, so that a long run
does not look like a hang."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from rich.console import Group
from rich.live import Live
from rich.text import Text

from kubemark_up.run.measurements import Measurement
from kubemark_up.run.workloads.base import Progress
from kubemark_up.ui import UI

LOG_EVERY = 30.0  # seconds


class LiveView:
    def __init__(self, ui: UI, progress: Progress, measurements: Sequence[Measurement]) -> None:
        self.ui = ui
        self.progress = progress
        self.measurements = measurements
        self.started = time.monotonic()
        self._live: Live | None = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def render(self) -> Group:
        progress = self.progress
        elapsed = time.monotonic() - self.started
        phase = progress.phases[-1] if progress.phases else {}
        rate = f", asked {phase['requested_rate']:g}/s" if phase.get("requested_rate") else ""
        lines = [Text(f"phase {progress.phase}{rate} · created {progress.created} · deleted {progress.deleted}"
                      f" · {elapsed:.0f}s")]
        for measurement in self.measurements:
            try:
                line = measurement.live()
            except Exception:  # a live line is a nicety; it never stops a run
                line = None
            if line:
                lines.append(Text(f"  {line}", style="dim"))
        return Group(*lines)

    def __enter__(self) -> LiveView:
        if self.ui.console.is_terminal:
            self._live = Live(get_renderable=self.render, console=self.ui.console, refresh_per_second=2,
                              transient=False)
            self._live.__enter__()
        else:
            self._thread = threading.Thread(target=self._log, name="live-log", daemon=True)
            self._thread.start()
        return self

    def _log(self) -> None:
        while not self._done.wait(LOG_EVERY):
            self.ui.console.print(self.render())

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
        else:  # not a terminal (a CI log): the last state
            self._done.set()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self.ui.console.print(self.render())
