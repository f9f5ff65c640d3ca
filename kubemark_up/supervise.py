"""Keeps one master component running, as a kubelet keeps a static pod: when it exits
it is started again after the kubelet's crash-loop back-off (10 s, doubling up to
5 minutes, back to 10 s once it has run 10 minutes), and SIGTERM or SIGINT is passed
on to it, after which the supervisor exits with it.

    python3 supervise.py STATUS_FILE -- COMMAND [ARG...]

Its stdout and stderr are the component's log. It writes STATUS_FILE, named
<component>.supervise.json (JSON, replaced atomically; nobody else writes it): the
component's current pid, how often it was restarted and its last exit code. It
imports only the standard library (Python 3.8 and later), because it runs on
whatever host runs the master.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

BACKOFF_START = 10.0
BACKOFF_MAX = 300.0
RESET_AFTER = 600.0


def _write(path: str, status: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as handle:
        json.dump(status, handle)
    os.replace(tmp, path)


class _State:
    """What the signal handler and the loop share."""

    def __init__(self) -> None:
        self.stopping = False
        self.child: subprocess.Popen | None = None


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: supervise.py STATUS_FILE -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    status_file, command = argv[0], argv[2:]
    name = os.path.basename(status_file).split(".supervise.json")[0]
    state = _State()

    def on_signal(signum: int, frame: object) -> None:
        state.stopping = True
        child = state.child
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    restarts = 0
    status: dict = {"pid": None, "restarts": restarts, "last_exit_code": None}
    backoff = BACKOFF_START
    while True:
        started = time.monotonic()
        try:
            child = subprocess.Popen(command)
        except OSError as exc:
            print(f"kubemark-up supervise: cannot start {command[0]}: {exc}", flush=True)
            return 127
        state.child = child
        if state.stopping:  # a signal came while it was being started
            child.terminate()
        status["pid"] = child.pid
        _write(status_file, status)
        code = child.wait()
        code = 128 - code if code < 0 else code  # killed by a signal: 128 + its number
        status["last_exit_code"] = code
        if state.stopping:
            status["pid"] = None
            _write(status_file, status)
            return code
        if time.monotonic() - started >= RESET_AFTER:
            backoff = BACKOFF_START
        restarts += 1
        status["restarts"] = restarts
        status["pid"] = None
        _write(status_file, status)
        print(
            f"kubemark-up supervise: {name} exited with code {code}; "
            f"restart {status['restarts']} in {backoff:.0f}s",
            flush=True,
        )
        deadline = time.monotonic() + backoff
        while not state.stopping and time.monotonic() < deadline:
            time.sleep(0.2)
        if state.stopping:
            return code
        backoff = min(backoff * 2, BACKOFF_MAX)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
