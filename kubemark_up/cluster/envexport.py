"""`kubemark-up env`: the shell exports with which clusterloader2
(--provider=kubemark) and kubetest-driven e2e suites run against a kubemark-up
cluster unchanged. Names as clusterloader2 reads them (cmd/clusterloader.go,
pkg/util/ssh_core.go; see ../shared/reference/clusterloader2.md) and as the legacy
kubemark scripts exported them."""

from __future__ import annotations

import getpass
import shlex
from pathlib import Path
from urllib.parse import urlsplit

from kubemark_up.config import Settings
from kubemark_up.master import STANDARD_METRICS_PORTS
from kubemark_up.state import ClusterDir, ClusterInfo, ClusterState


def exports(cdir: ClusterDir, info: ClusterInfo, state: ClusterState, settings: Settings) -> dict[str, str]:
    endpoint = urlsplit(state.endpoint or "")
    address = (state.master.addresses[0] if state.master and state.master.addresses else endpoint.hostname) or ""
    found = {
        "KUBECONFIG": str(cdir.kubeconfig),
        "PROVIDER": "kubemark",
        "KUBERNETES_PROVIDER": "kubemark",
        "NUM_NODES": str(len(state.nodes)),
        "KUBEMARK_NUM_NODES": str(len(state.nodes)),
        "MASTER_NAME": f"{info.name}-master",
        "MASTER_IP": address,
        "MASTER_INTERNAL_IP": address,
        "KUBE_MASTER": f"{info.name}-master",
        "KUBE_MASTER_IP": address,
        "KUBE_MASTER_URL": state.endpoint or "",
    }
    if state.ports.get("etcd_metrics"):
        # EtcdMetrics' `curl http://localhost:PORT/metrics` on the master (default 2382).
        found["ETCD_INSECURE_PORT"] = str(state.ports["etcd_metrics"])
    ssh = ssh_access(cdir, info, state, settings)
    if ssh is not None:
        user, host, port, key = ssh
        # clusterloader2 and the e2e framework SSH to MASTER_IP (port 22) for the master's
        # metrics; the master's host as SSH reaches it.
        found["MASTER_IP"] = host
        found["KUBE_SSH_USER"] = user
        if key:
            found["KUBE_SSH_KEY_PATH"] = key
        found["KUBE_SSH_PORT"] = str(port)
    if settings.hollow_nodes == "pods":
        root = str(Path(settings.pods.get("kubeconfig") or "~/.kube/config").expanduser())
        found["ROOT_KUBECONFIG"] = root
        found["KUBEMARK_ROOT_KUBECONFIG"] = root
        found["PROVIDER_CONFIGS"] = f"ROOT_KUBECONFIG={root}"
    return found


def ssh_access(cdir: ClusterDir, info: ClusterInfo, state: ClusterState,
               settings: Settings) -> tuple[str, str, int, str | None] | None:
    """user, host, port and private key file with which the master is reached over SSH,
    for the providers that reach it so (None for local)."""
    section = settings.provider_settings
    if info.provider == "preexisting":
        key = str(Path(str(section["identity_file"])).expanduser()) if section.get("identity_file") else None
        return str(section.get("user") or getpass.getuser()), str(section["host"]), int(section.get("port", 22)), key
    if info.provider == "gce":
        from kubemark_up.providers.gce import KEY_FILE

        host = state.master.addresses[0] if state.master and state.master.addresses else ""
        return (str(section.get("ssh_user", "kubemark-up")), host, int(section.get("ssh_port", 22)),
                str(cdir.pki / KEY_FILE))
    return None


def notes(cdir: ClusterDir, info: ClusterInfo, state: ClusterState, settings: Settings) -> list[str]:
    """What keeps clusterloader2's SSH measurements (SchedulingMetrics, EtcdMetrics) from
    this cluster's master, each one line."""
    ssh = ssh_access(cdir, info, state, settings)
    if ssh is None:
        return [f"clusterloader2 reaches the master's metrics over SSH, and a {info.provider} cluster's master has "
                "none: its SchedulingMetrics and EtcdMetrics cannot run here (`kubemark-up run load` measures them)"]
    found = []
    if ssh[2] != 22:
        found.append(f"clusterloader2 connects to SSH on port 22 only; this master's SSH is on port {ssh[2]}")
    standard = {name: state.ports.get(name) for name in STANDARD_METRICS_PORTS}
    if standard != STANDARD_METRICS_PORTS:
        found.append("this master's metrics are not on clusterloader2's fixed ports (standard_metrics_ports: false)")
    return found


def shell(values: dict[str, str]) -> str:
    return "".join(f"export {key}={shlex.quote(value)}\n" for key, value in values.items())
