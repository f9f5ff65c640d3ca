"""The bodies of what the pods engines make, built from the settings and the
cluster's PKI; nothing here calls a cluster. Every object carries the cluster's
labels, and stop deletes only what carries its uid."""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path
from typing import Any

import jinja2
import yaml

from kubemark_up import kubeconfig as kubeconfig_mod
from kubemark_up import pki
from kubemark_up.context import Context
from kubemark_up.errors import ConfigError

UID_LABEL = "kubemark-up.io/uid"
CLUSTER_LABEL = "kubemark-up.io/cluster"
SECRET = "hollow-node-identity"
CONFIGMAP = "hollow-node-config"
# Each variant's StatefulSet. They share the Secret's and ConfigMap's names, so a
# namespace holds the one or the other: preflight and a sweep look for both.
STATEFULSET = "hollow-node"
FLEET_STATEFULSET = "hollow-fleet"
STATEFULSETS = (STATEFULSET, FLEET_STATEFULSET)
BOOTSTRAP_GROUP = "system:bootstrappers:kubemark-up"
# The bindings of the kubelet's TLS bootstrap and of the node-problem-detectors'
# identity: name -> (cluster role, subject kind, subject).
BINDINGS = {
    "kubemark-up:node-bootstrapper": ("system:node-bootstrapper", "Group", BOOTSTRAP_GROUP),
    "kubemark-up:node-autoapprove": ("system:certificates.k8s.io:certificatesigningrequests:nodeclient", "Group",
                                     BOOTSTRAP_GROUP),
    "kubemark-up:node-renewal": ("system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", "Group",
                                 "system:nodes"),
    "kubemark-up:node-problem-detector": ("system:node-problem-detector", "User", pki.NPD_USER),
}
# The dummy system-log monitor the legacy hollow node-problem-detector ran: it reads
# nothing, so the detector only sends its heartbeat of conditions.
_KERNEL_MONITOR = {
    "plugin": "filelog", "pluginConfig": {"timestamp": "dummy", "message": "dummy", "timestampFormat": "dummy"},
    "logPath": "/dev/null", "lookback": "10m", "bufferSize": 10, "source": "kernel-monitor",
    "conditions": [], "rules": [],
}


def labels(ctx: Context) -> dict[str, str]:
    return {"app.kubernetes.io/name": "hollow-node", "app.kubernetes.io/managed-by": "kubemark-up",
            CLUSTER_LABEL: ctx.info.name, UID_LABEL: ctx.info.uid}


def selector(ctx: Context) -> dict[str, str]:
    return {"app.kubernetes.io/name": "hollow-node", UID_LABEL: ctx.info.uid}


def new_token() -> tuple[str, str]:
    """A bootstrap token, [a-z0-9]{6}.[a-z0-9]{16}, as the bootstrap-token format asks."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return ("".join(secrets.choice(alphabet) for _ in range(6)), "".join(secrets.choice(alphabet) for _ in range(16)))


def token_secret(ctx: Context, token_id: str, secret: str) -> dict:
    """The bootstrap token, as a Secret of the kubemark master's kube-system."""
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
        "metadata": {"name": f"bootstrap-token-{token_id}", "namespace": "kube-system", "labels": labels(ctx)},
        "stringData": {"token-id": token_id, "token-secret": secret, "usage-bootstrap-authentication": "true",
                       "auth-extra-groups": BOOTSTRAP_GROUP, "description": f"hollow nodes of {ctx.info.name}"},
    }


def bindings(ctx: Context) -> list[dict]:
    return [{
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": labels(ctx)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": subject}],
    } for name, (role, kind, subject) in BINDINGS.items()]


def namespace(ctx: Context, name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels(ctx)}}


def kubeconfigs(ctx: Context, token: str) -> dict[str, bytes]:
    """The Secret's kubeconfigs: the kubelets' bootstrap, kube-proxy's, node-problem-detector's."""
    configs = {
        "bootstrap.kubeconfig": _token_kubeconfig(server=ctx.state.endpoint or "", ca=ctx.dir.pki / "ca.crt",
                                                  token=token, cluster=ctx.info.name),
        "kubeproxy.kubeconfig": _cert_kubeconfig(ctx, "kube-proxy", "system:kube-proxy"),
        "npd.kubeconfig": _cert_kubeconfig(ctx, "node-problem-detector", pki.NPD_USER),
    }
    return {key: yaml.safe_dump(value).encode() for key, value in configs.items()}


def secret(ctx: Context, namespace: str, data: dict[str, bytes]) -> dict:
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": SECRET, "namespace": namespace, "labels": labels(ctx)},
        "data": {key: base64.b64encode(value).decode() for key, value in data.items()},
    }


def node_config(ctx: Context) -> dict[str, str]:
    """The ConfigMap's data every variant needs: node-problem-detector's config."""
    return {"kernel.monitor": json.dumps(_KERNEL_MONITOR), "content.type": ctx.settings.kube_api_content_type}


def configmap(ctx: Context, namespace: str, data: dict[str, str]) -> dict:
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": CONFIGMAP, "namespace": namespace, "labels": labels(ctx)},
        "data": data,
    }


def template_path(own: Path | None, packaged: str) -> Path:
    """The user's template if set, else the packaged one (config/ in a checkout)."""
    if own is not None:
        return own.expanduser()
    installed = Path(__file__).parents[2] / "_data" / "config" / packaged
    return installed if installed.is_file() else Path(__file__).parents[3] / "config" / packaged


def render(path: Path, setting: str, values: dict[str, Any]) -> dict:
    """The StatefulSet from its template; a template that does not render one is bad input."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{setting} {path} cannot be read ({exc.strerror})") from None
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
    try:
        manifest = yaml.safe_load(env.from_string(text).render(**values))
    except (jinja2.TemplateError, yaml.YAMLError) as exc:
        raise ConfigError(f"{setting} {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != "StatefulSet":
        raise ConfigError(f"{setting} {path} must render one StatefulSet")
    return manifest


def _token_kubeconfig(*, server: str, ca: Path, token: str, cluster: str) -> dict:
    return {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": server,
                                                   "certificate-authority-data": base64.b64encode(ca.read_bytes()).decode()}}],
        "users": [{"name": "kubelet-bootstrap", "user": {"token": token}}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": "kubelet-bootstrap"}}],
        "current-context": cluster,
    }


def _cert_kubeconfig(ctx: Context, stem: str, user: str) -> dict:
    authority = ctx.dir.pki
    return kubeconfig_mod.embedded(
        server=ctx.state.endpoint or "", ca=authority / "ca.crt", cert=authority / f"{stem}.crt",
        key=authority / f"{stem}.key", user=user, cluster=ctx.info.name,
    )
