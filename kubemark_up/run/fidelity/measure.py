"""`kubemark-up fidelity`: wait out a window on a running cluster, then count the
nodes' requests in the apiserver's audit log (see analysis)."""

from __future__ import annotations

import datetime as dt
import posixpath
import tempfile
import time
from pathlib import Path

from kubemark_up import cluster, pki
from kubemark_up.errors import ConfigError, KubemarkUpError
from kubemark_up.run.fidelity.analysis import Report, analyse, load_reference
from kubemark_up.ui import UI


def measure(name: str, home: Path, ui: UI, *, minutes: float, settle: float, tolerance: float,
            reference: Path | None = None) -> Report:
    ctx = cluster.context(name, home)
    try:
        if not ctx.settings.audit_nodes:
            raise ConfigError(f"cluster {name} was started without audit_nodes: fidelity reads the apiserver's audit "
                              "log of the nodes' requests: start it with --audit-nodes (or audit_nodes: true)")
        expected = load_reference(reference)
        site = ctx.provider.master(ctx)
        log = posixpath.join(site.paths.log_dir, "audit.log")
        now = dt.datetime.now(dt.UTC)
        start = now + dt.timedelta(seconds=settle)
        end = start + dt.timedelta(minutes=minutes)
        seconds = int((end - now).total_seconds())
        with ui.counter(f"fidelity window ({settle:.0f}s settle, {minutes:g} min counted)", seconds) as update:
            while (left := (end - dt.datetime.now(dt.UTC)).total_seconds()) > 0:
                time.sleep(min(1.0, left))
                update(seconds - max(0, int(left)))
        time.sleep(2)  # the audit backend writes in batches: let the window's last ones land
        with tempfile.TemporaryDirectory() as scratch:
            copy = Path(scratch) / "audit.log"
            if not site.host.get(log, copy):
                raise KubemarkUpError(f"no audit log at {log} on {site.host.name}")
            with copy.open(errors="replace") as lines:
                return analyse(lines, start=start, end=end, npd_user=pki.NPD_USER, reference=expected,
                               tolerance=tolerance)
    finally:
        ctx.provider.close()
