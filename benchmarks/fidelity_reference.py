"""Measure a real node and write the fidelity reference (kubemark_up/run/fidelity/reference.yaml).

    sudo python3 benchmarks/fidelity_reference.py [--minutes 25] [--pods 30] [--out PATH]

One real node as the only node of a kubemark-up master with audit_nodes on (the
tests' RealNode: the real v1.36.3 kubelet with containerd, runc and a CNI bridge, a
real kube-proxy in iptables mode in a network namespace of its own, the real
node-problem-detector run as the hollow-node image runs it). After --settle seconds:
--minutes at rest (requests per bucket and minute, watches and connections open at the
end), then --pods pause pods made, held Running and deleted (requests per pod in their
namespace, bound -> Running). Needs root, like the root cluster. Bounded: everything it
starts is stopped, whatever happens.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil
import yaml
from harness import CLI, bin_dir

from tests.support import nodetraffic
from tests.support.realnode import RealNode

REFERENCE = Path(__file__).resolve().parent.parent / "kubemark_up" / "run" / "fidelity" / "reference.yaml"


def measure(root: Path, binaries: Path | None, *, minutes: float, pods: int, settle: float, progress=print) -> tuple:
    """Bring a RealNode up under root, measure it, take it down: (at rest, churn, versions)."""
    node = RealNode(folder=root / "node", cli=CLI(home=root / "home", bin_dir=binaries))
    began = time.monotonic()
    node.start()
    try:
        progress(f"real node up in {time.monotonic() - began:.0f}s; settling {settle:g}s")
        time.sleep(settle)
        rest = nodetraffic.at_rest(node, minutes, progress=progress) if minutes else None
        life = nodetraffic.churn(node, pods, progress=progress)
        return rest, life, nodetraffic.versions(node)
    finally:
        node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--minutes", type=float, default=25, help="minutes at rest [25]")
    parser.add_argument("--pods", type=int, default=30, help="pods churned [30]")
    parser.add_argument("--settle", type=float, default=60, help="seconds between the node's start and the window [60]")
    parser.add_argument("--out", type=Path, default=REFERENCE, help="where to write [the packaged reference.yaml]")
    parser.add_argument("--note", default="", help="added to the source line (for example: the machine was busy)")
    parser.add_argument("--lifecycle-only", action="store_true",
                        help="measure the churn only, into the --out reference, keeping its rows at rest")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("fidelity_reference: needs root (containerd, runc, a bridge, a network namespace)")
    if args.minutes <= 0 or args.pods <= 0 or args.settle < 0:
        raise SystemExit("fidelity_reference: --minutes and --pods must be positive, --settle not negative")
    earlier = None
    if args.lifecycle_only:
        try:
            earlier = yaml.safe_load(args.out.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise SystemExit(f"fidelity_reference: --lifecycle-only needs a reference at {args.out}: {exc}") from None
        if not isinstance(earlier, dict) or "measured" not in earlier or "requests" not in earlier:
            raise SystemExit(f"fidelity_reference: {args.out} is not a measured reference")
    command = "python3 benchmarks/fidelity_reference.py " + shlex.join(sys.argv[1:])
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="kmup-fidelity-ref-") as tmp:
        rest, life, versions = measure(Path(tmp), bin_dir(), minutes=0 if earlier else args.minutes, pods=args.pods,
                                       settle=args.settle, progress=lambda line: print(line, flush=True))
    load = max(load_before, os.getloadavg()[0])
    machine = f"{psutil.cpu_count()} cores, load {load:.1f}"
    today = dt.date.today().isoformat()
    if earlier is not None:
        # The rows at rest stay as measured; the lifecycle is this run's, and the stamp says so.
        fresh = nodetraffic.reference(nodetraffic.AtRest(0, Counter(), Counter(), Counter()), life, {}, "")
        doc = {**earlier, "lifecycle": fresh["lifecycle"]}
        doc["source"] = (f"{earlier['source']}; lifecycle re-measured {today} ({machine}"
                         + (f", {args.note})" if args.note else ")"))
        doc["measured"] = {**earlier["measured"], "command": f"{earlier['measured']['command']}; then {command}"}
    else:
        source = (f"one real node measured: kubelet, kube-proxy (iptables) and node-problem-detector of the pinned "
                  f"versions, no pods at rest; {machine}" + (f"; {args.note}" if args.note else ""))
        stamp = {**versions, "date": today, "command": command, "minutes": args.minutes}
        doc = nodetraffic.reference(rest, life, stamp, source)
    args.out.write_text(nodetraffic.render(doc, nodetraffic.COMMENTS))
    print(f"wrote {args.out}: {len(doc['requests'])} request rows, {len(doc['watches'])} watches, "
          f"{sum(row['open'] for row in doc['connections'])} connections; lifecycle of {life.pods} pods "
          f"({len(doc['lifecycle']['requests'])} rows), bound->Running p50 "
          f"{doc['lifecycle']['timing']['bound_to_running_p50']}s p99 {doc['lifecycle']['timing']['bound_to_running_p99']}s")


if __name__ == "__main__":
    main()
