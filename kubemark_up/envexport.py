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
    if info.provider == "preexisting":
        ssh = settings.provider_settings
        found["KUBE_SSH_USER"] = str(ssh.get("user") or getpass.getuser())
        if ssh.get("identity_file"):
            found["KUBE_SSH_KEY_PATH"] = str(Path(str(ssh["identity_file"])).expanduser())
        found["KUBE_SSH_PORT"] = str(ssh.get("port", 22))
    if settings.hollow_nodes == "pods":
        root = str((settings.pods.kubeconfig or Path("~/.kube/config")).expanduser())
        found["ROOT_KUBECONFIG"] = root
        found["KUBEMARK_ROOT_KUBECONFIG"] = root
        found["PROVIDER_CONFIGS"] = f"ROOT_KUBECONFIG={root}"
    return found


def shell(values: dict[str, str]) -> str:
    return "".join(f"export {key}={shlex.quote(value)}\n" for key, value in values.items())
