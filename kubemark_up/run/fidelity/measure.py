"""`kubemark-up fidelity`: wait out a window on a running cluster, then judge the
nodes' requests in the apiserver's audit log (analysis.py), with what the log cannot
tell: which nodes there are (the cluster's state), the TCP connections open to the
apiserver at the window's end (counted on the master's host), and how long the pods
bound in the window took to run (a pod watch over the window)."""

from __future__ import annotations

import datetime as dt
import json
import posixpath
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from kubemark_up import cluster, pki
from kubemark_up.errors import ConfigError, KubemarkUpError
from kubemark_up.hosts.base import Host
from kubemark_up.run.fidelity.analysis import Report, analyse
from kubemark_up.run.fidelity.reference import load_reference
from kubemark_up.ui import UI

if TYPE_CHECKING:
    from kubemark_up.run.measurements.pods import PodWatch

# The apiserver's established connections by peer address, from the kernel's socket
# tables as ss reads them (/proc/net/tcp, tcp6), run by the master host's python so
# that no iproute2 is needed there. Only sockets whose local port is the apiserver's:
# on one machine the clients' own ends of loopback connections are there too.
_PEERS_SCRIPT = r"""
import json, socket, struct, sys
port = int(sys.argv[1]); peers = {}
for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
    try:
        lines = open(table).read().splitlines()[1:]
    except OSError:
        continue
    for line in lines:
        fields = line.split()
        local, remote, state = fields[1], fields[2], fields[3]
        if state != "01" or int(local.split(":")[1], 16) != port:
            continue
        raw = bytes.fromhex(remote.split(":")[0])
        raw = b"".join(struct.pack("<I", *struct.unpack(">I", raw[i:i + 4])) for i in range(0, len(raw), 4))
        address = socket.inet_ntop(family, raw)
        address = address.removeprefix("::ffff:") if "." in address else address
        peers[address] = peers.get(address, 0) + 1
print(json.dumps(peers))
"""


# A component whose connection sits idle for client-go's 90 s closes it and opens
# another with its next request (node-problem-detector, one PATCH in 5 minutes, is
# connected about a third of the time): a count at one instant is a sample of that,
# so the window is sampled and each address judged by the most it held open at once.
PEER_SAMPLE_EVERY = 20.0


def most_open(samples: list[dict[str, int] | None]) -> dict[str, int] | None:
    """Per peer address, the most connections any sample saw; None if none was read."""
    read = [s for s in samples if s is not None]
    if not read:
        return None
    most: dict[str, int] = {}
    for sample in read:
        for address, count in sample.items():
            most[address] = max(most.get(address, 0), count)
    return most


def first_at_most(samples: list[tuple[str, dict[str, int] | None]], most: dict[str, int]) -> dict[str, str]:
    """Per peer address, when (the sample's time) it first held its most: where to look
    in the logs when a node held more than the reference."""
    when: dict[str, str] = {}
    for stamp, sample in samples:
        for address, count in (sample or {}).items():
            if count == most.get(address) and address not in when:
                when[address] = stamp
    return when


def count_peers(host: Host, port: int) -> dict[str, int] | None:
    """Established connections to the apiserver's port by peer address; None if they
    could not be read there (no /proc: not Linux)."""
    try:
        result = host.run([host.python, "-c", _PEERS_SCRIPT, str(port)], timeout=30)
    except KubemarkUpError:
        return None
    if result.code != 0:
        return None
    try:
        return {str(k): int(v) for k, v in json.loads(result.stdout).items()}
    except (ValueError, AttributeError):
        return None


def measure(name: str, home: Path, ui: UI, *, minutes: float, settle: float, tolerance: float,
            reference: Path | None = None) -> Report:
    ctx = cluster.context(name, home)
    try:
        if not ctx.settings.audit_nodes:
            raise ConfigError(f"cluster {name} was started without audit_nodes: fidelity reads the apiserver's audit "
                              "log of the nodes' requests: start it with --audit-nodes (or audit_nodes: true)")
        nodes = list(ctx.state.nodes)
        if not nodes:
            raise ConfigError(f"cluster {name} has no hollow nodes: fidelity has nothing to judge")
        expected = load_reference(reference)
        site = ctx.provider.master(ctx)
        log = posixpath.join(site.paths.log_dir, "audit.log")
        pods = _pod_watch(ctx.dir.kubeconfig)
        notes = []
        try:
            now = dt.datetime.now(dt.UTC)
            start = now + dt.timedelta(seconds=settle)
            end = start + dt.timedelta(minutes=minutes)
            seconds = int((end - now).total_seconds())
            port = ctx.state.ports.get("apiserver")
            samples: list[tuple[str, dict[str, int] | None]] = []
            sampled = 0.0
            with ui.counter(f"fidelity window ({settle:.0f}s settle, {minutes:g} min counted)", seconds) as update:
                while (left := (end - dt.datetime.now(dt.UTC)).total_seconds()) > 0:
                    time.sleep(min(1.0, left))
                    update(seconds - max(0, int(left)))
                    if port and dt.datetime.now(dt.UTC) >= start and time.monotonic() - sampled >= PEER_SAMPLE_EVERY:
                        sampled = time.monotonic()
                        samples.append((_stamp(), count_peers(site.host, port)))
            if port:
                samples.append((_stamp(), count_peers(site.host, port)))
            peers = most_open([sample for _, sample in samples])
            peaks = first_at_most(samples, peers or {})
            time.sleep(2)  # the audit backend writes in batches: let the window's last ones land
        finally:
            if pods is not None:
                pods.stop()
        startups = None
        if pods is not None:
            # Bound to Running as one watch saw both (the API's own stamps are whole seconds).
            startups = [p.running - p.scheduled for p in pods.records()
                        if p.node in nodes and p.scheduled is not None and p.running is not None
                        and start.timestamp() <= p.scheduled < end.timestamp()]
            notes += pods.errors[:3]
        else:
            notes.append("the pods could not be watched: bound-to-Running not measured")
        with tempfile.TemporaryDirectory() as scratch:
            copy = Path(scratch) / "audit.log"
            if not site.host.get(log, copy):
                raise KubemarkUpError(f"no audit log at {log} on {site.host.name}")
            with copy.open(errors="replace") as lines:
                report = analyse(lines, start=start, end=end, npd_user=pki.NPD_USER, reference=expected,
                                 nodes=nodes, tolerance=tolerance, peers=peers, peaks=peaks,
                                 master_addresses=[*site.addresses, site.bind_address], startups=startups)
        report.notes += notes
        return report
    finally:
        ctx.provider.close()


def _stamp() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _pod_watch(kubeconfig: Path) -> PodWatch | None:
    """A watch of every pod (the run's pod watch, without its run label), or None when
    the master does not answer a list of pods."""
    from kubemark_up.run.measurements.pods import PodWatch
    from kubemark_up.run.model import Kube

    try:
        watch = PodWatch(Kube(kubeconfig), run_id="")
        watch.selector = ""  # every pod, not one run's
        watch.start()
    except (KubemarkUpError, OSError):
        return None
    return watch
