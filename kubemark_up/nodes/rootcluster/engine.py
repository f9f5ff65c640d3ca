"""Hollow nodes as pods on a root cluster: a StatefulSet in a namespace of the root
cluster (config/hollow-node.yaml), one pod per hollow node, named after its node; or,
with node_engine: fleet, a StatefulSet of kubemark-fleet pods (config/hollow-fleet.yaml),
pod hollow-fleet-<o> carrying pods.nodes_per_pod nodes from hollow-node-(o*nodes_per_pod)
on, each node its own identity by TLS bootstrap.

What it makes, each recorded in state before it is asked for and labelled with the
cluster's uid (stop deletes only what carries that label):
    on the kubemark master  a bootstrap token (kube-system), and the bindings that let
                            its holders ask for node certificates (approved and signed
                            by the controller-manager) and node-problem-detector patch
                            node status
    on the root cluster     the namespace (unless it is there already), the Secret of
                            kubeconfigs (bootstrap, kube-proxy, node-problem-detector),
                            the ConfigMap of node-problem-detector's config (and the
                            fleet's), and the StatefulSet, scaled up wave by wave
"""

from __future__ import annotations

import base64
import ipaddress
import json
import math
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import urllib3
import yaml
from kubernetes import client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException

from kubemark_up import binaries, pki
from kubemark_up import image as image_mod
from kubemark_up import kubeconfig as kubeconfig_mod
from kubemark_up.config import PodsSettings, Settings
from kubemark_up.context import Context
from kubemark_up.errors import BinaryError, ComponentError, ConfigError, HostError, KubemarkUpError
from kubemark_up.nodes.base import NodeEngine, NodeFailure, NodeLocation
from kubemark_up.nodes.kubemark.args import kubelet_args, proxy_args

UID_LABEL = "kubemark-up.io/uid"
CLUSTER_LABEL = "kubemark-up.io/cluster"
STATEFULSET = "hollow-node"
FLEET_STATEFULSET = "hollow-fleet"
SECRET = "hollow-node-identity"
CONFIGMAP = "hollow-node-config"
BOOTSTRAP_GROUP = "system:bootstrappers:kubemark-up"
# A container that restarted this often while start waits is crash-looping.
CRASH_LOOP_RESTARTS = 3
_TRANSIENT = (ApiException, urllib3.exceptions.HTTPError, OSError)
# The dummy system-log monitor the legacy hollow node-problem-detector ran: it reads
# nothing, so the detector only sends its heartbeat of conditions.
_KERNEL_MONITOR = {
    "plugin": "filelog", "pluginConfig": {"timestamp": "dummy", "message": "dummy", "timestampFormat": "dummy"},
    "logPath": "/dev/null", "lookback": "10m", "bufferSize": 10, "source": "kernel-monitor",
    "conditions": [], "rules": [],
}
# A fleet node's measured cost (benchmarks/start_to_ready.py, v1.36.3, idle nodes):
# about 0.1 mCPU and 0.4-0.45 MiB PSS from hundreds of nodes a process up; a fleet pod
# requests 0.7 MiB a node, room for pod churn, plus its process's own ~28 MiB.
FLEET_NODE_MILLICPU = 0.1
FLEET_NODE_MEM_KI = 717
FLEET_BASE_MILLICPU = 5
FLEET_BASE_MEM_KI = 32 * 1024
# Fleet nodes in pods get InternalIPs from the benchmarking range, one per node index:
# unique, and nothing here ever dials them (their connections are not bound to them).
FLEET_ADDRESSES = ipaddress.IPv4Network("198.18.0.0/15")
# Where the fleet container finds what the Secret holds (config/hollow-fleet.yaml).
_IDENTITY = "/identity"


def is_fleet(settings: Settings) -> bool:
    return settings.node_engine == "fleet"


def statefulset_name(settings: Settings) -> str:
    return FLEET_STATEFULSET if is_fleet(settings) else STATEFULSET


def fleet_pods(nodes: int, per_pod: int) -> int:
    """How many fleet pods carry this many nodes."""
    return math.ceil(nodes / per_pod)


def fleet_pod_of(index: int, per_pod: int) -> str:
    """The fleet pod that carries hollow node number index."""
    return f"{FLEET_STATEFULSET}-{index // per_pod}"


def fleet_nodes_of(pod: str, per_pod: int, nodes: int) -> list[str]:
    """The hollow nodes that fleet pod hollow-fleet-<o> carries."""
    tail = pod.rsplit("-", 1)[-1]
    if not tail.isdigit():
        return []
    first = int(tail) * per_pod
    return [f"hollow-node-{i}" for i in range(first, min(first + per_pod, nodes))]


def fleet_requests(per_pod: int) -> dict[str, int]:
    """A fleet pod's requests, from the measured cost of its nodes."""
    return {"fleet_millicpu": math.ceil(FLEET_BASE_MILLICPU + FLEET_NODE_MILLICPU * per_pod),
            "fleet_mem_ki": FLEET_BASE_MEM_KI + FLEET_NODE_MEM_KI * per_pod}


def fleet_config(ctx: Context, nodes: int) -> dict:
    """kubemark-fleet's config in every fleet pod (its Config, with a shard and bootstrap:
    gobuild/fleet/bootstrap.go): each pod works out its nodes from its name."""
    settings = ctx.settings

    def identity(stem: str) -> dict:
        return {"cert": f"{_IDENTITY}/{stem}.crt", "key": f"{_IDENTITY}/{stem}.key"}

    return {
        "server": ctx.state.endpoint, "ca": f"{_IDENTITY}/ca.crt", "version": binaries.pinned_version(),
        "start_window": settings.fleet_start_window, "max_pods": settings.max_pods,
        "proxy": identity("kube-proxy"), "npd": identity("node-problem-detector"), "nodes": [],
        "bind_addresses": False,
        "shard": {"node_prefix": "hollow-node-", "per_process": settings.pods.nodes_per_pod, "count": nodes,
                  "ordinal_env": "POD_NAME", "address_base": str(FLEET_ADDRESSES.network_address)},
        "bootstrap": {"token_file": f"{_IDENTITY}/bootstrap-token"},
    }


def template_path(settings: PodsSettings, *, fleet: bool = False) -> Path:
    own = settings.fleet_template if fleet else settings.template
    if own is not None:
        return own.expanduser()
    name = "hollow-fleet.yaml" if fleet else "hollow-node.yaml"
    packaged = Path(__file__).parents[2] / "_data" / "config" / name
    return packaged if packaged.is_file() else Path(__file__).parents[3] / "config" / name


def requests(settings: Settings) -> dict[str, int]:
    """Per-container requests as the legacy start-kubemark.sh computed them (see the
    reference on the legacy scripts): the proxy's memory grows 50 KiB per cluster node."""
    pods = settings.pods
    proxy_millicpu = pods.proxy_millicpu or (50 if settings.nodes > 1000 else 20)
    return {
        "kubelet_millicpu": pods.kubelet_millicpu, "kubelet_mem_ki": pods.kubelet_mem_ki,
        "proxy_millicpu": proxy_millicpu, "proxy_mem_ki": 100 * 1024 + pods.proxy_mem_per_node_ki * settings.nodes,
        "npd_millicpu": 20, "npd_mem_ki": 20 * 1024,
    }


def render(ctx: Context, *, image: str) -> dict:
    """The StatefulSet, from the template."""
    fleet = is_fleet(ctx.settings)
    path = template_path(ctx.settings.pods, fleet=fleet)
    setting = "pods.fleet_template" if fleet else "pods.template"
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{setting} {path} cannot be read ({exc.strerror})") from None
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
    try:
        rendered = env.from_string(text).render(
            namespace=ctx.settings.pods.namespace, labels=_labels(ctx), selector=_selector(ctx), image=image,
            master=ctx.state.endpoint, kubelet_args=kubelet_args(ctx.settings), proxy_args=proxy_args(ctx.settings),
            **requests(ctx.settings), **fleet_requests(ctx.settings.pods.nodes_per_pod),
        )
        manifest = yaml.safe_load(rendered)
    except (jinja2.TemplateError, yaml.YAMLError) as exc:
        raise ConfigError(f"{setting} {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != "StatefulSet":
        raise ConfigError(f"{setting} {path} must render one StatefulSet")
    name = (manifest.get("metadata") or {}).get("name")
    if fleet and name != FLEET_STATEFULSET:
        raise ConfigError(f"{setting} {path} must name its StatefulSet {FLEET_STATEFULSET}, not {name}")
    return manifest


def _labels(ctx: Context) -> dict[str, str]:
    return {"app.kubernetes.io/name": "hollow-node", "app.kubernetes.io/managed-by": "kubemark-up",
            CLUSTER_LABEL: ctx.info.name, UID_LABEL: ctx.info.uid}


def _selector(ctx: Context) -> dict[str, str]:
    return {"app.kubernetes.io/name": "hollow-node", UID_LABEL: ctx.info.uid}


@dataclass
class _Clients:
    core: client.CoreV1Api
    apps: client.AppsV1Api
    rbac: client.RbacAuthorizationV1Api


def _clients(api: client.ApiClient) -> _Clients:
    return _Clients(client.CoreV1Api(api), client.AppsV1Api(api), client.RbacAuthorizationV1Api(api))


class PodNodes(NodeEngine):
    name = "pods"

    def __init__(self, settings: PodsSettings) -> None:
        self.settings = settings
        self._root: _Clients | None = None

    @property
    def where(self) -> str:
        context = f", context {self.settings.context}" if self.settings.context else ""
        return f"the root cluster ({self._kubeconfig()}{context}, namespace {self.settings.namespace})"

    # The two clusters ------------------------------------------------------------

    def _kubeconfig(self) -> Path:
        return (self.settings.kubeconfig or Path("~/.kube/config")).expanduser()

    def root(self) -> _Clients:
        if self._root is None:
            path = self._kubeconfig()
            if not path.is_file():
                raise ConfigError(f"pods.kubeconfig {path} does not exist (the root cluster's kubeconfig)")
            try:
                api = kube_config.new_client_from_config(config_file=str(path), context=self.settings.context)
            except kube_config.ConfigException as exc:
                raise ConfigError(f"pods.kubeconfig {path}: {str(exc).splitlines()[0]}") from None
            except (OSError, yaml.YAMLError, ValueError, TypeError) as exc:
                raise ConfigError(f"pods.kubeconfig {path} cannot be read: {str(exc).splitlines()[0]}") from None
            self._root = _clients(api)
        return self._root

    @staticmethod
    def master(ctx: Context) -> _Clients:
        return _clients(kube_config.new_client_from_config(config_file=str(ctx.dir.kubeconfig)))

    def _call(self, what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        """A root-cluster call whose failure is one line naming the root cluster."""
        try:
            return call(*args, _request_timeout=30, **kwargs)
        except ApiException as exc:
            raise HostError(f"the root cluster refused to {what}: {exc.status} {_reason(exc)}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise HostError(f"the root cluster ({self._kubeconfig()}) did not answer when asked to {what} "
                            f"({type(exc).__name__})") from None

    # Start ------------------------------------------------------------------------

    def preflight(self, ctx: Context) -> None:
        if not self.settings.image:
            raise ConfigError(
                "pods.image is not set: push the hollow-node image with `kubemark-up image push "
                "REGISTRY/kubemark:TAG` (or name an existing one) and set pods.image to it"
            )
        if is_fleet(ctx.settings) and ctx.settings.nodes > FLEET_ADDRESSES.num_addresses - 2:
            raise ConfigError(f"fleet nodes in pods take their InternalIPs from {FLEET_ADDRESSES}: at most "
                              f"{FLEET_ADDRESSES.num_addresses - 2} nodes")
        root = self.root()
        namespace = self.settings.namespace
        self._call("list namespaces", root.core.list_namespace, limit=1)
        existing = None
        for name in (STATEFULSET, FLEET_STATEFULSET):  # the same Secret and ConfigMap names: one or the other
            try:
                existing = existing or root.apps.read_namespaced_stateful_set(name, namespace, _request_timeout=30)
            except ApiException as exc:
                if exc.status != 404:
                    raise HostError(f"the root cluster refused to read {namespace}/{name}: {exc.status}") from None
            except (urllib3.exceptions.HTTPError, OSError):
                raise HostError(f"the root cluster ({self._kubeconfig()}) did not answer") from None
        if existing is not None:
            labels = existing.metadata.labels if existing.metadata else None
            owner = (labels or {}).get(CLUSTER_LABEL, "someone else")
            raise ConfigError(
                f"namespace {namespace} of the root cluster already holds the hollow nodes of {owner}: "
                "set pods.namespace to another one"
            )
        render(ctx, image=self.settings.image)  # a broken template is bad input: say so now

    def prepare(self, ctx: Context, names: list[str]) -> None:
        reference = self.settings.image or ""
        digest = self._digest(ctx, reference)
        # The pods run the very image the digest names, whatever the tag points at later.
        pinned = f"{image_mod.repository(reference)}@{digest}" if digest else reference
        ctx.state.image = {"reference": reference, "digest": digest, "pods": pinned}
        ctx.save()
        self._bootstrap_on_master(ctx)
        self._objects_on_root(ctx, pinned, len(names))

    def _digest(self, ctx: Context, reference: str) -> str | None:
        if "@sha256:" in reference:
            return reference.split("@", 1)[1]
        try:
            crane = binaries.tool("crane", ctx.settings, ctx.dir.home, ctx.ui)
        except BinaryError:
            crane = None
        digest = image_mod.remote_digest(reference, crane=crane) if crane else None
        if digest is None:
            ctx.ui.warn(f"cannot read the digest of {reference} from here; the pods use the tag, and the root "
                        "cluster says whether it can pull it")
        return digest

    def _bootstrap_on_master(self, ctx: Context) -> None:
        """A bootstrap token and the bindings of the kubelet's TLS bootstrap, and of the
        node-problem-detectors' identity."""
        api = self.master(ctx)
        token_id, token_secret = _new_token()
        pki.write_secret(ctx.dir.pki / "bootstrap-token", f"{token_id}.{token_secret}".encode())
        secret = {
            "apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
            "metadata": {"name": f"bootstrap-token-{token_id}", "namespace": "kube-system", "labels": _labels(ctx)},
            "stringData": {"token-id": token_id, "token-secret": token_secret, "usage-bootstrap-authentication": "true",
                           "auth-extra-groups": BOOTSTRAP_GROUP, "description": f"hollow nodes of {ctx.info.name}"},
        }
        self._ensure(ctx, "master", secret, api.core.create_namespaced_secret, namespace="kube-system")
        bindings = {
            "kubemark-up:node-bootstrapper": ("system:node-bootstrapper", "Group", BOOTSTRAP_GROUP),
            "kubemark-up:node-autoapprove": ("system:certificates.k8s.io:certificatesigningrequests:nodeclient", "Group",
                                             BOOTSTRAP_GROUP),
            "kubemark-up:node-renewal": ("system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", "Group",
                                         "system:nodes"),
            "kubemark-up:node-problem-detector": ("system:node-problem-detector", "User", pki.NPD_USER),
        }
        for name, (role, kind, subject) in bindings.items():
            binding = {
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": name, "labels": _labels(ctx)},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": subject}],
            }
            self._ensure(ctx, "master", binding, api.rbac.create_cluster_role_binding)

    def _objects_on_root(self, ctx: Context, image: str, nodes: int) -> None:
        root, namespace = self.root(), self.settings.namespace
        try:
            root.core.read_namespace(namespace, _request_timeout=30)
        except ApiException as exc:
            if exc.status != 404:
                raise HostError(f"the root cluster refused to read namespace {namespace}: {exc.status}") from None
            body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": _labels(ctx)}}
            self._ensure(ctx, "root", body, root.core.create_namespace)
        ca = ctx.dir.pki / "ca.crt"
        server = ctx.state.endpoint or ""
        token = (ctx.dir.pki / "bootstrap-token").read_text().strip()
        kubeconfigs = {
            "bootstrap.kubeconfig": _token_kubeconfig(server=server, ca=ca, token=token, cluster=ctx.info.name),
            "kubeproxy.kubeconfig": _cert_kubeconfig(ctx, "kube-proxy", "system:kube-proxy"),
            "npd.kubeconfig": _cert_kubeconfig(ctx, "node-problem-detector", pki.NPD_USER),
        }
        data = {key: yaml.safe_dump(value).encode() for key, value in kubeconfigs.items()}
        if is_fleet(ctx.settings):
            # kubemark-fleet reads certificates and keys, and the token, as files.
            authority = ctx.dir.pki
            data["bootstrap-token"] = token.encode()
            for name in ("ca.crt", "kube-proxy.crt", "kube-proxy.key", "node-problem-detector.crt",
                         "node-problem-detector.key"):
                data[name] = (authority / name).read_bytes()
        secret = {
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": SECRET, "namespace": namespace, "labels": _labels(ctx)},
            "data": {key: base64.b64encode(value).decode() for key, value in data.items()},
        }
        self._ensure(ctx, "root", secret, root.core.create_namespaced_secret, namespace=namespace)
        content_type = ctx.settings.kube_api_content_type
        config = {"kernel.monitor": json.dumps(_KERNEL_MONITOR), "content.type": content_type}
        if is_fleet(ctx.settings):
            config["fleet.json"] = json.dumps(fleet_config(ctx, nodes), indent=1)
        configmap = {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": CONFIGMAP, "namespace": namespace, "labels": _labels(ctx)},
            "data": config,
        }
        self._ensure(ctx, "root", configmap, root.core.create_namespaced_config_map, namespace=namespace)
        self._ensure(ctx, "root", render(ctx, image=image), root.apps.create_namespaced_stateful_set,
                     namespace=namespace)

    def _ensure(self, ctx: Context, where: str, body: dict, create: Any, **where_args: Any) -> None:
        """Record an object, then create it (on the kubemark master or the root cluster)."""
        meta = body["metadata"]
        key = f"{where}:{body['kind']}:{meta.get('namespace', '')}/{meta['name']}"
        with ctx.creating("k8s-object", key, step="nodes", cluster=where, api_version=body["apiVersion"],
                          object_kind=body["kind"], namespace=meta.get("namespace"), name=meta["name"]):
            what = f"create {body['kind']} {meta.get('namespace', '') + '/' if meta.get('namespace') else ''}{meta['name']}"
            if where == "root":
                self._call(what, create, body=body, **where_args)
            else:
                try:
                    create(body=body, _request_timeout=30, **where_args)
                except ApiException as exc:
                    raise ComponentError(f"the kubemark master refused to {what}: {exc.status} {_reason(exc)}") from None

    def start(self, ctx: Context, names: list[str]) -> None:
        """One wave: the StatefulSet scaled up to every node started so far (fleet pods:
        as many as carry them)."""
        ctx.state.nodes = list(dict.fromkeys([*ctx.state.nodes, *names]))
        ctx.save()
        replicas = len(ctx.state.nodes)
        if is_fleet(ctx.settings):
            replicas = fleet_pods(replicas, self.settings.nodes_per_pod)
        name = statefulset_name(ctx.settings)
        self._call(f"scale {name} to {replicas}", self.root().apps.patch_namespaced_stateful_set_scale,
                   name, self.settings.namespace, body={"spec": {"replicas": replicas}})

    # Watching ---------------------------------------------------------------------

    def _pods(self, ctx: Context) -> list[dict]:
        selector = ",".join(f"{k}={v}" for k, v in _selector(ctx).items())
        response: Any = self._call("list the hollow-node pods", self.root().core.list_namespaced_pod, self.settings.namespace,
                              label_selector=selector, _preload_content=False)
        return list(json.loads(response.data)["items"])

    def _nodes_of(self, ctx: Context, pod: str) -> list[str]:
        """The hollow nodes a pod carries: itself, or a fleet pod's share."""
        if is_fleet(ctx.settings):
            return fleet_nodes_of(pod, self.settings.nodes_per_pod, ctx.settings.nodes)
        return [pod]

    def progress(self, ctx: Context) -> tuple[str, int] | None:
        running = [pod["metadata"]["name"] for pod in self._pods(ctx)
                   if (pod.get("status") or {}).get("phase") == "Running"]
        if is_fleet(ctx.settings):  # counted in nodes, as the bar's total is
            return "nodes in fleet pods Running", sum(len(self._nodes_of(ctx, pod)) for pod in running)
        return "hollow-node pods Running", len(running)

    def failed(self, ctx: Context) -> dict[str, NodeFailure]:
        failed: dict[str, NodeFailure] = {}
        for pod in self._pods(ctx):
            name = pod["metadata"]["name"]
            for status in (pod.get("status") or {}).get("containerStatuses") or []:
                waiting = (status.get("state") or {}).get("waiting") or {}
                if status.get("restartCount", 0) >= CRASH_LOOP_RESTARTS and waiting.get("reason") == "CrashLoopBackOff":
                    failure = NodeFailure(
                        f"its {'fleet pod ' + name + ' ' if is_fleet(ctx.settings) else ''}{status['name']} "
                        f"container is crash-looping ({status['restartCount']} restarts)",
                        f"pod {self.settings.namespace}/{name} container {status['name']}",
                        self._log_tail(name, status["name"], previous=True),
                    )
                    for node in self._nodes_of(ctx, name):
                        failed[node] = failure
                    break
        return failed

    def diagnose(self, ctx: Context) -> str:
        """What keeps the hollow nodes from coming up, pod by pod (for a wait that ran out)."""
        lines, counts = [], {"Running": 0}
        for pod in self._pods(ctx):
            name, status = pod["metadata"]["name"], pod.get("status") or {}
            phase = status.get("phase", "Unknown")
            counts[phase] = counts.get(phase, 0) + 1
            problems = []
            for condition in status.get("conditions") or []:
                if condition.get("type") == "PodScheduled" and condition.get("status") != "True":
                    problems.append(f"not scheduled: {condition.get('reason')}: {condition.get('message', '')}")
            for container in status.get("containerStatuses") or []:
                waiting = (container.get("state") or {}).get("waiting") or {}
                if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName"):
                    problems.append(f"{container['name']}: {waiting['reason']}: {waiting.get('message', '')}")
                elif waiting.get("reason") == "CrashLoopBackOff":
                    tail = self._log_tail(name, container["name"], previous=True).splitlines()[-3:]
                    problems.append(f"{container['name']}: crash-looping; last lines: " + " | ".join(tail))
            if problems:
                lines.append(f"pod {name} ({phase}): " + "; ".join(dict.fromkeys(problems)))
        summary = ", ".join(f"{count} {phase}" for phase, count in counts.items())
        kind = "fleet pods" if is_fleet(ctx.settings) else "hollow-node pods"
        return "\n".join([f"{kind}: {summary}", *lines[:10], *(["..."] if len(lines) > 10 else [])])

    def _log_tail(self, pod: str, container: str, *, previous: bool = False, lines: int = 15) -> str:
        try:
            text = self.root().core.read_namespaced_pod_log(
                pod, self.settings.namespace, container=container, previous=previous, tail_lines=lines,
                _request_timeout=30,
            )
        except _TRANSIENT:
            return ""
        return str(text)

    def locate(self, ctx: Context, node: str) -> NodeLocation:
        namespace = self.settings.namespace
        name, carries = node, ""
        if is_fleet(ctx.settings):
            per_pod = self.settings.nodes_per_pod
            name = fleet_pod_of(int(node.rsplit("-", 1)[-1]), per_pod)  # hollow-node-<index>
            share = fleet_nodes_of(name, per_pod, ctx.settings.nodes)
            carries = f"; a fleet carrying {share[0]} .. {share[-1]}" if share else ""
        try:
            pod: Any = self.root().core.read_namespaced_pod(name, namespace, _request_timeout=30,
                                                            _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return NodeLocation(node=node, where=f"no pod {namespace}/{name} on the root cluster (not started yet?)")
            raise HostError(f"the root cluster refused to read pod {namespace}/{name}: {exc.status}") from None
        except (urllib3.exceptions.HTTPError, OSError):
            raise HostError(f"the root cluster ({self._kubeconfig()}) did not answer") from None
        body = json.loads(pod.data)
        status, spec = body.get("status") or {}, body.get("spec") or {}
        context = f" --context {self.settings.context}" if self.settings.context else ""
        logs = f"kubectl --kubeconfig {self._kubeconfig()}{context} -n {namespace} logs {name} -c CONTAINER"
        details = []
        for container in status.get("containerStatuses") or []:
            state = next(iter(container.get("state") or {"unknown": {}}))
            details.append({"container": container["name"], "state": state, "restarts": container.get("restartCount", 0),
                            "running": state == "running", "logs": logs.replace("CONTAINER", container["name"])})
        where = (f"pod {namespace}/{name} on root node {spec.get('nodeName', '(not scheduled)')}, "
                 f"pod IP {status.get('podIP', '-')}, {status.get('phase', 'Unknown')}{carries}")
        return NodeLocation(node=node, where=where, details=details)

    def collect_logs(self, ctx: Context, out: Path) -> list[Path]:
        written = []
        for pod in self._pods(ctx):
            name = pod["metadata"]["name"]
            for container in (pod.get("spec") or {}).get("containers") or []:
                try:
                    text = self.root().core.read_namespaced_pod_log(name, self.settings.namespace,
                                                                    container=container["name"], _request_timeout=60)
                except _TRANSIENT:
                    continue
                target = out / f"{name}.{container['name']}.log"
                target.write_text(str(text))
                written.append(target)
        return written

    # Stop -------------------------------------------------------------------------

    def stop(self, ctx: Context) -> list[str]:
        """Delete what prepare recorded, newest first: the StatefulSet (then wait for its
        pods to go), the Secret, the ConfigMap, the namespace if it was made here; and
        on the master the token and bindings (if the master still answers). An object
        that is gone is fine; one without our label is left alone and named."""
        errors: list[str] = []
        recorded = [r for r in ctx.resources("nodes") if r.kind == "k8s-object"]
        if not recorded and not ctx.state.steps:
            return self._sweep(ctx)
        for resource in recorded:
            details = resource.details
            try:
                errors += self._delete(ctx, details)
            except KubemarkUpError as exc:
                errors.append(exc.message)
                continue
            ctx.forget(resource)
        return errors

    def _sweep(self, ctx: Context) -> list[str]:
        """Without a state to go by: what in the namespace carries this cluster's uid."""
        namespace, errors = self.settings.namespace, []
        for kind, name in (("StatefulSet", STATEFULSET), ("StatefulSet", FLEET_STATEFULSET), ("Secret", SECRET),
                           ("ConfigMap", CONFIGMAP), ("Namespace", namespace)):
            details = {"cluster": "root", "object_kind": kind, "name": name,
                       "namespace": None if kind == "Namespace" else namespace}
            found = self._delete(ctx, details)
            # In a sweep, what is not ours is simply not ours: no problem to report.
            errors += [e for e in found if "does not carry" not in e]
        return errors

    def _delete(self, ctx: Context, details: dict) -> list[str]:
        kind, name, namespace = details["object_kind"], details["name"], details.get("namespace")
        if details["cluster"] == "master":
            if not ctx.dir.kubeconfig.exists():
                return []  # the master, and with it these objects, are gone
            try:
                api = self.master(ctx)
            except (OSError, kube_config.ConfigException):
                return []
            clients = api
        else:
            clients = self.root()
        reads: dict[str, tuple[Any, Any, tuple]] = {
            "Namespace": (clients.core.read_namespace, clients.core.delete_namespace, ()),
            "Secret": (clients.core.read_namespaced_secret, clients.core.delete_namespaced_secret, (namespace,)),
            "ConfigMap": (clients.core.read_namespaced_config_map, clients.core.delete_namespaced_config_map, (namespace,)),
            "StatefulSet": (clients.apps.read_namespaced_stateful_set, clients.apps.delete_namespaced_stateful_set,
                            (namespace,)),
            "ClusterRoleBinding": (clients.rbac.read_cluster_role_binding, clients.rbac.delete_cluster_role_binding, ()),
        }
        read, delete, scope = reads[kind]
        label = f"{kind} {namespace + '/' if namespace else ''}{name}"
        try:
            current = read(name, *scope, _request_timeout=30)
        except ApiException as exc:
            if exc.status == 404:
                return []
            return [f"could not read {label} ({exc.status} {_reason(exc)})"]
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if details["cluster"] == "master":
                return []  # a master that is already stopped took these with it
            return [f"the root cluster did not answer about {label} ({type(exc).__name__})"]
        labels = current.metadata.labels if current.metadata else None
        if (labels or {}).get(UID_LABEL) != ctx.info.uid:
            return [f"{label} does not carry this cluster's label {UID_LABEL}={ctx.info.uid}: left alone"]
        try:
            delete(name, *scope, _request_timeout=30, propagation_policy="Foreground" if kind == "StatefulSet" else None)
        except ApiException as exc:
            if exc.status != 404:
                return [f"could not delete {label} ({exc.status} {_reason(exc)})"]
        if kind in ("StatefulSet", "Namespace"):
            return self._wait_gone(ctx, label, lambda: read(name, *scope, _request_timeout=30))
        return []

    def _wait_gone(self, ctx: Context, label: str, read: Any) -> list[str]:
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


def _new_token() -> tuple[str, str]:
    """A bootstrap token, [a-z0-9]{6}.[a-z0-9]{16}, as the bootstrap-token format asks."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return ("".join(secrets.choice(alphabet) for _ in range(6)), "".join(secrets.choice(alphabet) for _ in range(16)))


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


def _reason(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "").get("message", exc.reason))
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason)

