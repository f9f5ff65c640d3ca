"""Fleet hollow nodes: many hollow nodes in one kubemark-fleet process (the Go
program in kubemark_up/fleet, built by gobuild/), each with its own identity and its
own connections, sending what a real node sends.

    host.py  fleet processes on the master's host (hollow_nodes: host)
    pods.py  fleet pods on a root cluster (hollow_nodes: pods)
"""

from __future__ import annotations

from kubemark_up.config import Settings


def tuning(settings: Settings) -> dict[str, float]:
    """The fleet config's settings from ours: the pods' timing (kubemark_up/fleet/podlife.go's
    PodLife) and the Events queue (events.go)."""
    return {"pod_start_seconds": settings.fleet_pod_start_seconds,
            "pod_lifetime_seconds": settings.fleet_pod_lifetime_seconds,
            "event_queue_per_node": settings.fleet_event_queue_per_node}
