"""The two clusters the pods engines talk to: the root cluster (from pods.kubeconfig)
and the kubemark master (from the cluster's admin kubeconfig); their failures as
one line; and deleting one object that carries the cluster's uid."""

from __future__ import annotations

import json
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
import yaml
from kubernetes import client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException

from kubemark_up.context import Context
from kubemark_up.errors import ConfigError, HostError
from kubemark_up.nodes.rootcluster.objects import UID_LABEL

TRANSIENT = (ApiException, urllib3.exceptions.HTTPError, OSError)


@dataclass
class Clients:
    core: client.CoreV1Api
    apps: client.AppsV1Api
    rbac: client.RbacAuthorizationV1Api


def _clients(api: client.ApiClient) -> Clients:
    return Clients(client.CoreV1Api(api), client.AppsV1Api(api), client.RbacAuthorizationV1Api(api))


def root_clients(kubeconfig: Path, context: str | None) -> Clients:
    if not kubeconfig.is_file():
        raise ConfigError(f"pods.kubeconfig {kubeconfig} does not exist (the root cluster's kubeconfig)")
    try:
        api = kube_config.new_client_from_config(config_file=str(kubeconfig), context=context)
    except kube_config.ConfigException as exc:
        raise ConfigError(f"pods.kubeconfig {kubeconfig}: {str(exc).splitlines()[0]}") from None
    except (OSError, yaml.YAMLError, ValueError, TypeError) as exc:
        raise ConfigError(f"pods.kubeconfig {kubeconfig} cannot be read: {str(exc).splitlines()[0]}") from None
    return _clients(api)


def master_clients(ctx: Context) -> Clients:
    return _clients(kube_config.new_client_from_config(config_file=str(ctx.dir.kubeconfig)))


def reason(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "").get("message", exc.reason))
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason)


def unreachable(exc: BaseException) -> str:
    """Why a cluster did not answer, in a few words ("connection refused", "timed out",
    a TLS failure), from the innermost cause of the client's error: urllib3 wraps it
    in a MaxRetryError whose own name says nothing."""
    chain: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and link not in chain and len(chain) < 10:
        chain.append(link)
        reason = getattr(link, "reason", None)  # urllib3 keeps the cause in .reason
        link = reason if isinstance(reason, BaseException) else (link.__cause__ or link.__context__)
    for cause in reversed(chain):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS: {cause.verify_message}"
        if isinstance(cause, ssl.SSLError):
            return f"TLS: {(cause.reason or str(cause)).lower().replace('_', ' ')}"
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror[:1].lower() + cause.strerror[1:]
        if isinstance(cause, (TimeoutError, urllib3.exceptions.TimeoutError)):
            return "timed out"
    return type(exc).__name__


def first_statefulset(root: Clients, namespace: str, names: tuple[str, ...], kubeconfig: Path) -> Any:
    """The first StatefulSet of these names in namespace on the root cluster, or None."""
    existing = None
    for name in names:
        try:
            existing = existing or root.apps.read_namespaced_stateful_set(name, namespace, _request_timeout=30)
        except ApiException as exc:
            if exc.status == 403:
                raise HostError(f"the root cluster refused to read StatefulSet {namespace}/{name}: 403 {reason(exc)} "
                                "(pods.namespace must be a namespace this user may use)") from None
            if exc.status != 404:
                raise HostError(f"the root cluster refused to read StatefulSet {namespace}/{name}: "
                                f"{exc.status} {reason(exc)}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise HostError(f"the root cluster ({kubeconfig}) did not answer ({unreachable(exc)})") from None
    return existing


def delete(ctx: Context, clients: Clients, details: dict) -> list[str]:
    """Delete the object details name if it carries this cluster's uid, and wait for a
    StatefulSet or Namespace to be gone; what went wrong, as lines."""
    kind, name, namespace = details["object_kind"], details["name"], details.get("namespace")
    reads: dict[str, tuple[Any, Any, tuple]] = {
        "Namespace": (clients.core.read_namespace, clients.core.delete_namespace, ()),
        "Secret": (clients.core.read_namespaced_secret, clients.core.delete_namespaced_secret, (namespace,)),
        "ConfigMap": (clients.core.read_namespaced_config_map, clients.core.delete_namespaced_config_map, (namespace,)),
        "StatefulSet": (clients.apps.read_namespaced_stateful_set, clients.apps.delete_namespaced_stateful_set,
                        (namespace,)),
        "ClusterRoleBinding": (clients.rbac.read_cluster_role_binding, clients.rbac.delete_cluster_role_binding, ()),
    }
    read, remove, scope = reads[kind]
    label = f"{kind} {namespace + '/' if namespace else ''}{name}"
    try:
        current = read(name, *scope, _request_timeout=30)
    except ApiException as exc:
        if exc.status == 404:
            return []
        return [f"could not read {label} ({exc.status} {reason(exc)})"]
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        if details["cluster"] == "master":
            return []  # a master that is already stopped took these with it
        return [f"the root cluster did not answer about {label} ({unreachable(exc)})"]
    labels = current.metadata.labels if current.metadata else None
    if (labels or {}).get(UID_LABEL) != ctx.info.uid:
        return [f"{label} does not carry this cluster's label {UID_LABEL}={ctx.info.uid}: left alone"]
    try:
        remove(name, *scope, _request_timeout=30, propagation_policy="Foreground" if kind == "StatefulSet" else None)
    except ApiException as exc:
        if exc.status != 404:
            return [f"could not delete {label} ({exc.status} {reason(exc)})"]
    if kind in ("StatefulSet", "Namespace"):
        return _wait_gone(ctx, label, lambda: read(name, *scope, _request_timeout=30))
    return []


def _wait_gone(ctx: Context, label: str, read: Any) -> list[str]:
    deadline = time.monotonic() + ctx.settings.stop_timeout + 120
    while time.monotonic() < deadline:
        try:
            read()
        except ApiException as exc:
            if exc.status == 404:
                return []
        except (urllib3.exceptions.HTTPError, OSError):
            pass
        time.sleep(1)
    return [f"{label} was still there {ctx.settings.stop_timeout + 120:.0f}s after it was deleted"]
