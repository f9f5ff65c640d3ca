"""The master components, from the one set of templates in master-manifests/.

render() turns Settings plus where things live into one record per component:
the static-pod manifest, the command it runs, and its probes. A kubelet could run
the manifests; kubemark-up writes the commands into one start script on the
master's host (start_script), runs each component through it under a supervisor,
and uses the startupProbe as its readiness check.
"""

from __future__ import annotations

import ipaddress
import json
import posixpath
import shlex
from dataclasses import dataclass
from pathlib import Path

import jinja2
import yaml

from kubemark_up import pki
from kubemark_up.config import Settings
from kubemark_up.hosts import agent

# Start order; stop runs it backwards (kube-apiserver keeps retrying a dead etcd
# for 30 s after SIGTERM, so etcd goes last).
ORDER = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
PORT_NAMES = ("etcd_client", "etcd_peer", "etcd_metrics", "apiserver", "controller_manager", "scheduler")
# Events' own etcd, where the master has an events disk (MasterPaths.events_data_dir):
# rendered from etcd.yaml, started and stopped with etcd.
EVENTS = "etcd-events"
EVENTS_PORT_NAMES = ("etcd_events_client", "etcd_events_peer", "etcd_events_metrics")
# Where the components other than the apiserver serve /metrics, on their host's loopback
# (the manifests bind them there): scheme, and the name of the port in state.
METRICS_ENDPOINTS = {
    "etcd": ("http", "etcd_metrics"),
    "kube-controller-manager": ("https", "controller_manager"),
    "kube-scheduler": ("https", "scheduler"),
}
# The ports clusterloader2 reaches them at over SSH, fixed in its code: the scheduler's
# and controller-manager's secure ports (pkg/provider/util.go, SchedulingMetrics'
# `curl -k https://localhost:10259/metrics`) and etcd's plain-HTTP metrics port
# (EtcdMetrics' `curl http://localhost:2382/metrics`, --etcd-insecure-port's default).
# Providers whose master is reached over SSH use them (README: "clusterloader2").
STANDARD_METRICS_PORTS = {"controller_manager": 10257, "scheduler": 10259, "etcd_metrics": 2382}

_EXTRA_ARGS = {
    "etcd": "etcd_extra_args",
    "kube-apiserver": "apiserver_extra_args",
    "kube-controller-manager": "controller_manager_extra_args",
    "kube-scheduler": "scheduler_extra_args",
}


def manifests_dir() -> Path:
    """master-manifests/ in a wheel (packaged under _data) or in a source checkout."""
    packaged = Path(__file__).parent / "_data" / "master-manifests"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "master-manifests"


@dataclass(frozen=True)
class Probe:
    scheme: str
    host: str
    port: int
    path: str

    @property
    def url(self) -> str:
        return f"{self.scheme.lower()}://{self.host}:{self.port}{self.path}"


@dataclass(frozen=True)
class MasterPaths:
    """Where the master's files are on the host that runs it (POSIX paths there)."""

    pki_dir: str
    kubeconfig_dir: str
    data_dir: str  # etcd's data, the rendered manifests, the start script
    bin_dir: str
    log_dir: str
    events_data_dir: str | None = None  # etcd-events' data (the events disk), if there is one

    @property
    def start_script(self) -> str:
        return posixpath.join(self.data_dir, "start-master.sh")

    @property
    def manifests_dir(self) -> str:
        return posixpath.join(self.data_dir, "manifests")

    def binary(self, name: str) -> str:
        return posixpath.join(self.bin_dir, name)

    def log(self, name: str) -> str:
        return posixpath.join(self.log_dir, f"{name}.log")


@dataclass(frozen=True)
class Component:
    name: str
    manifest: dict
    command: list[str]  # command[0] is the bare binary name; the runner resolves it
    startup_probe: Probe
    liveness_probe: Probe


def order(paths: MasterPaths) -> tuple[str, ...]:
    """The master's components in start order, etcd-events beside etcd if it has one."""
    return ("etcd", EVENTS, *ORDER[1:]) if paths.events_data_dir else ORDER


def port_names(paths: MasterPaths) -> tuple[str, ...]:
    return PORT_NAMES + EVENTS_PORT_NAMES if paths.events_data_dir else PORT_NAMES


def _members(paths: MasterPaths, ports: dict[str, int]) -> dict[str, dict]:
    """etcd.yaml's values for each etcd member."""
    members = {"etcd": {"pod": "etcd", "name": "etcd0", "data_dir": posixpath.join(paths.data_dir, "etcd"),
                        "client": ports["etcd_client"], "peer": ports["etcd_peer"], "metrics": ports["etcd_metrics"]}}
    if paths.events_data_dir:
        members[EVENTS] = {"pod": EVENTS, "name": "etcd-events0", "data_dir": paths.events_data_dir,
                           "client": ports["etcd_events_client"], "peer": ports["etcd_events_peer"],
                           "metrics": ports["etcd_events_metrics"]}
    return members


def _flag(name: str, value: object) -> str:
    return json.dumps(f"--{name}={value}")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(manifests_dir()),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.globals["flag"] = _flag
    return env


def _probe(container: dict, key: str) -> Probe:
    get = container[key]["httpGet"]
    return Probe(get.get("scheme", "HTTP"), get["host"], int(get["port"]), get["path"])


def render(
    settings: Settings,
    *,
    paths: MasterPaths,
    ports: dict[str, int],
    advertise_address: str,
    bind_address: str = "127.0.0.1",
) -> list[Component]:
    """bind_address is where kube-apiserver listens; etcd and the other components
    listen on loopback only, as kubeadm sets them up."""
    env = _environment()
    members = _members(paths, ports)
    values = dict(
        settings.model_dump(),
        ports=ports,
        pki_dir=paths.pki_dir,
        kubeconfig_dir=paths.kubeconfig_dir,
        data_dir=paths.data_dir,
        log_dir=paths.log_dir,
        advertise_address=advertise_address,
        endpoint_reconciler_type="none" if ipaddress.ip_address(advertise_address).is_loopback else "lease",
        bind_address=bind_address,
        # A wildcard bind is probed, as a kubelet would, on loopback.
        probe_host="127.0.0.1" if bind_address in ("0.0.0.0", "::") else bind_address,
        cluster_cidr=settings.pod_cidr,
        inflight=settings.inflight_limits,
        etcd_events_client=members[EVENTS]["client"] if EVENTS in members else None,
    )
    components = []
    for name in order(paths):
        template = "etcd" if name == EVENTS else name
        text = env.get_template(f"{template}.yaml").render(
            values, member=members.get(name), extra_args=getattr(settings, _EXTRA_ARGS[template]))
        manifest = yaml.safe_load(text)
        container = manifest["spec"]["containers"][0]
        components.append(
            Component(
                name=name,
                manifest=manifest,
                command=[str(arg) for arg in container["command"]],
                startup_probe=_probe(container, "startupProbe"),
                liveness_probe=_probe(container, "livenessProbe"),
            )
        )
    return components


def metrics_url(component: str, ports: dict[str, int]) -> str:
    """Where component serves /metrics, as seen from its host."""
    scheme, port = METRICS_ENDPOINTS[component]
    return f"{scheme}://127.0.0.1:{ports[port]}/metrics"


def audit_policy(settings: Settings) -> str:
    """The audit policy that audit_nodes turns on (master-manifests/audit-policy.yaml)."""
    return _environment().get_template("audit-policy.yaml").render(npd_user=pki.NPD_USER)


def stop_wave(argv: list[str] | None) -> int:
    """When a process of the master stops, from its command line: the controllers
    first, then the apiserver, etcd last (the apiserver keeps retrying a dead etcd for
    30 s after SIGTERM); anything else with them first."""
    waves = {"kube-scheduler": 0, "kube-controller-manager": 0, "kube-apiserver": 1, "etcd": 2, EVENTS: 2}
    if not argv:
        return 0
    # A supervisor ends with its component's name (start-master.sh NAME); the component
    # itself runs as bin/NAME.
    return waves.get(argv[-1], waves.get(posixpath.basename(argv[0]), 0))


def probe_ok(url: str, timeout: float = 2.0) -> bool:
    """A GET of url from this machine that answers 2xx; like the kubelet's probes, the
    serving certificate is not checked (the controller-manager's is self-signed)."""
    return agent.probe([url], timeout)[0]


def start_script(components: list[Component], paths: MasterPaths, *, cluster: str) -> str:
    """The master's start script for its host: `sh start-master.sh COMPONENT` runs that
    component in the foreground with exactly the command its manifest holds, so the
    supervisor (and a person at that host) start each one the same way."""
    cases = []
    for component in components:
        argv = [paths.binary(component.command[0]), *component.command[1:]]
        lines = " \\\n      ".join(shlex.quote(arg) for arg in argv)
        cases.append(f"  {component.name})\n    exec {lines}\n    ;;")
    names = "|".join(component.name for component in components)
    return (
        "#!/bin/sh\n"
        f"# The master of kubemark cluster {cluster}, written by kubemark-up from the static-pod\n"
        f"# manifests in {paths.manifests_dir}. kubemark-up runs each component under its\n"
        "# supervisor (restarted with the kubelet's crash-loop back-off); by hand:\n"
        "#   sh start-master.sh COMPONENT\n"
        "set -eu\n"
        'case "${1:-}" in\n'
        + "\n".join(cases)
        + f"\n  *)\n    echo \"usage: $0 {names}\" >&2\n    exit 2\n    ;;\nesac\n"
    )
