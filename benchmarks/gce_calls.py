"""Benchmark: Compute API calls and wall time of `kubemark-up start` and `stop` with
the gce provider, against the tests' strict Compute endpoint (tests/support/gce_endpoint/),
whose "VM" is a real sshd on loopback (tests/support/sshd.py), so the master really starts.

    python3 benchmarks/gce_calls.py [--repeats 3] [--nodes 0] [--op-seconds 0.05] [--events-disk]

For each run: the calls by method (from the endpoint's request log), the span from
the first to the last Compute call, and the wall time of the CLI command. Operations
take --op-seconds each on the endpoint (real ones take seconds: the figures that
carry over are the call counts). Beside them, the legacy G2 scripts' gcloud commands
(../shared/reference/kubemark-legacy.md, §1.2 and §5.2), each of which makes several
API calls itself (gcloud polls operations). Results: JSON in benchmarks/results/,
and a summary on stdout.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import yaml
from harness import CLI, ComputeEndpoint, SSHServer, bin_dir

RESULTS = Path(__file__).parent / "results"
# The legacy G2 start-kubemark.sh / stop-kubemark.sh gcloud commands, without an events disk.
LEGACY_START = [
    "compute addresses describe (get-or-create-master-ip: none yet)", "compute addresses create",
    "compute addresses describe", "compute disks create", "compute addresses describe (again, in parallel)",
    "compute instances create", "compute instances add-metadata", "compute firewall-rules create",
    "compute ssh ':' (up to 10 tries)", "compute ssh (the PKI on its command line)", "compute scp --recurse",
    "compute ssh (start-kubemark-master.sh)",
]
LEGACY_STOP = ["compute instances delete", "compute disks delete", "compute disks delete (event-pd)",
               "compute addresses delete", "compute firewall-rules delete"]




def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _measure(endpoint: ComputeEndpoint, run) -> dict:
    before = len(endpoint.log)
    began = time.monotonic()
    result = run()
    wall = time.monotonic() - began
    if result.returncode != 0:
        raise SystemExit(f"failed:\n{result.stderr[-3000:]}")
    calls = endpoint.log[before:]
    by_method = collections.Counter(entry.method_id for entry in calls)
    span = calls[-1].at - calls[0].at if calls else 0.0
    return {"wall_s": round(wall, 2), "calls": len(calls), "api_span_s": round(span, 2), "by_method": dict(by_method),
            "errors": sum(entry.status >= 400 for entry in calls)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=0, help="hollow nodes (kubemark processes on the 'VM')")
    parser.add_argument("--op-seconds", type=float, default=0.05)
    parser.add_argument("--events-disk", action="store_true")
    args = parser.parse_args()
    if not 0 < args.repeats <= 10 or not 0 <= args.nodes <= 3:
        raise SystemExit("--repeats 1..10, --nodes 0..3 (this machine is shared)")

    work = Path(tempfile.mkdtemp(prefix="kmup-gce-bench-"))
    sshd = SSHServer()
    sshd.start()
    keys = sshd.dir / "authorized_keys"
    root = sshd.home / f"kmup-gce-bench-{os.getpid()}"
    root.mkdir(mode=0o755, exist_ok=True)
    shutil.chown(root, sshd.user)
    runs = []
    try:
        host_key = " ".join(sshd.host_key.with_suffix(".pub").read_text().split()[:2])
        with ComputeEndpoint(op_seconds=args.op_seconds, authorized_keys=keys, host_keys=[host_key]) as endpoint:
            cli = CLI(home=work / "home", bin_dir=bin_dir())
            config = work / "gce.yaml"
            config.write_text(yaml.safe_dump({"provider": "gce", "gce": {
                "project": "bench-project", "zone": "us-central1-b", "source_ranges": ["127.0.0.1/32"],
                "ssh_user": sshd.user, "ssh_port": sshd.port, "remote_root": str(root), "bind_address": "127.0.0.1",
                "events_disk": args.events_disk}}))
            env = {"KUBEMARK_UP_GCE_ENDPOINT": endpoint.url}
            for index in range(args.repeats):
                name = f"bench{index}"
                start = _measure(endpoint, lambda name=name: cli.run(
                    "start", "--name", name, "--nodes", str(args.nodes), "--config", str(config),
                    "--apiserver-port", str(_free_port()), timeout=900, **env))
                stop = _measure(endpoint, lambda name=name: cli.run("stop", "--name", name, timeout=600, **env))
                left = endpoint.items()
                runs.append({"start": start, "stop": stop, "left": len(left)})
                print(f"run {index}: start {start['calls']} calls, {start['wall_s']}s wall ({start['api_span_s']}s "
                      f"from first to last call); stop {stop['calls']} calls, {stop['wall_s']}s wall; left {len(left)}",
                      flush=True)
    finally:
        sshd.cleanup()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)

    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    out = RESULTS / f"gce_calls-{stamp}.json"
    out.write_text(json.dumps({"args": vars(args), "runs": runs, "legacy": {"start": LEGACY_START, "stop": LEGACY_STOP}},
                              indent=1))
    first = runs[0]
    print("\nCompute API calls by method (first run):")
    for phase in ("start", "stop"):
        print(f"  {phase}: " + ", ".join(f"{m.removeprefix('compute.')} {n}" for m, n in sorted(first[phase]["by_method"].items())))
    median = sorted(runs, key=lambda r: r["start"]["wall_s"])[len(runs) // 2]
    print(f"\nmedian of {len(runs)}: start {median['start']['calls']} calls {median['start']['wall_s']}s, "
          f"stop {median['stop']['calls']} calls {median['stop']['wall_s']}s (op_seconds {args.op_seconds})")
    print(f"legacy G2: start {len(LEGACY_START)} gcloud commands (8 of Compute resources, 4 of SSH/SCP), "
          f"stop {len(LEGACY_STOP)}; each gcloud command makes several API calls")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
