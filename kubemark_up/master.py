"""The master components, from the one set of templates in master-manifests/.

render() turns Settings plus where things live into one record per component:
the static-pod manifest, the command it runs, and its probes. A kubelet could run
the manifests; the local provider runs the commands as processes and uses the
startupProbe as its readiness check.
"""

from __future__ import annotations

import ipaddress
import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import jinja2
import yaml

from kubemark_up.config import Settings

# Start order; stop runs it backwards (kube-apiserver keeps retrying a dead etcd
# for 30 s after SIGTERM, so etcd goes last).
ORDER = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
PORT_NAMES = ("etcd_client", "etcd_peer", "etcd_metrics", "apiserver", "controller_manager", "scheduler")

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
    """Where the master's files are on the host that runs it."""

    pki_dir: str
    kubeconfig_dir: str
    data_dir: str


@dataclass(frozen=True)
class Component:
    name: str
    manifest: dict
    command: list[str]  # command[0] is the bare binary name; the runner resolves it
    startup_probe: Probe
    liveness_probe: Probe


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
    env = _environment()
    values = dict(
        settings.model_dump(),
        ports=ports,
        pki_dir=paths.pki_dir,
        kubeconfig_dir=paths.kubeconfig_dir,
        data_dir=paths.data_dir,
        advertise_address=advertise_address,
        endpoint_reconciler_type="none" if ipaddress.ip_address(advertise_address).is_loopback else "lease",
        bind_address=bind_address,
        probe_host=bind_address,
        cluster_cidr=settings.pod_cidr,
        inflight=settings.inflight_limits,
    )
    components = []
    for name in ORDER:
        text = env.get_template(f"{name}.yaml").render(values, extra_args=getattr(settings, _EXTRA_ARGS[name]))
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


def probe_ok(probe: Probe, timeout: float = 2.0) -> bool:
    """An HTTP(S) GET that answers 2xx. Like the kubelet's probes, it does not verify
    the serving certificate (the controller-manager's and scheduler's are self-signed)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(probe.url, timeout=timeout, context=context) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False
