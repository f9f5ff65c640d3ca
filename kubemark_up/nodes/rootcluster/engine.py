"""Hollow nodes as pods on a root cluster (hollow_nodes: pods): the part the two
variants share. A variant (nodes/kubemark/pods.py, nodes/fleet/pods.py) names its
StatefulSet and template, says what its pods carry, and adds what only it needs.

What it makes, each recorded in state before it is asked for and labelled with the
cluster's uid (stop deletes only what carries that label):
    on the kubemark master  a bootstrap token (kube-system), and the bindings that let
                            its holders ask for node certificates (approved and signed
                            by the controller-manager) and node-problem-detector patch
                            node status
    on the root cluster     the namespace (unless it is there already), the Secret of
                            kubeconfigs (bootstrap, kube-proxy, node-problem-detector),
                            the ConfigMap of node-problem-detector's config, and the
                            StatefulSet, scaled up wave by wave
"""

from __future__ import annotations

import json
from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Self

import urllib3
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException

from kubemark_up import binaries, pki
from kubemark_up import image as image_mod
from kubemark_up.context import Context
from kubemark_up.errors import BinaryError, ComponentError, ConfigError, HostError, KubemarkUpError
from kubemark_up.nodes.base import NodeEngine, NodeFailure, NodeLocation, NodeSite
from kubemark_up.nodes.rootcluster import api, objects, pulls
from kubemark_up.nodes.rootcluster.settings import PodsSettings

# A container that restarted this often while start waits is crash-looping.
CRASH_LOOP_RESTARTS = 3


class PodNodes(NodeEngine):
    name = "pods"
    statefulset: ClassVar[str]
    template_file: ClassVar[str]  # the packaged template, in config/
    template_setting: ClassVar[str]  # the setting that names the user's own
    kind: ClassVar[str]  # its pods, for messages: "hollow-node pods"
    running: ClassVar[str]  # the count progress shows: "hollow-node pods Running"

    def __init__(self, settings: PodsSettings) -> None:
        self.settings = settings
        self._root: api.Clients | None = None

    @classmethod
    def build(cls, ctx: Context, site: NodeSite | None = None) -> Self:
        return cls(PodsSettings.of(ctx.settings))

    # What a variant says ----------------------------------------------------------

    @abstractmethod
    def own_template(self) -> Path | None:
        """The user's template for this variant, if the settings name one."""

    @abstractmethod
    def template_values(self, ctx: Context) -> dict[str, Any]:
        """What this variant's template renders with, beside namespace, labels,
        selector, image and master."""

    @abstractmethod
    def replicas(self, nodes: int) -> int:
        """How many pods carry this many hollow nodes."""

    @abstractmethod
    def scaled(self, nodes: int) -> str:
        """For --dry-run: what the StatefulSet is scaled to for this many nodes."""

    @abstractmethod
    def nodes_of(self, ctx: Context, pod: str) -> list[str]:
        """The hollow nodes pod carries."""

    @abstractmethod
    def pod_of(self, ctx: Context, node: str) -> tuple[str, str]:
        """The pod that carries node, and what else it carries (for pod-for-node; '' for nothing)."""

    def whose(self, pod: str) -> str:
        """Whose container failed, for a NodeFailure: "its <whose>kubelet container"."""
        return ""

    def refuse(self, ctx: Context) -> None:
        """Refuse, in preflight, settings this variant cannot run. Optional."""
        return None

    def check(self, manifest: dict, path: Path) -> None:
        """Refuse a rendered StatefulSet this variant cannot scale. Optional."""
        return None

    def identity_files(self, ctx: Context, token: str) -> dict[str, bytes]:
        """What the variant's pods read from the Secret beside the kubeconfigs."""
        return {}

    def config_files(self, ctx: Context, nodes: int) -> dict[str, str]:
        """What the variant's pods read from the ConfigMap beside node-problem-detector's config."""
        return {}

    # The two clusters ------------------------------------------------------------

    @property
    def where(self) -> str:
        context = f", context {self.settings.context}" if self.settings.context else ""
        return f"the root cluster ({self._kubeconfig()}{context}, namespace {self.settings.namespace})"

    def _kubeconfig(self) -> Path:
        return (self.settings.kubeconfig or Path("~/.kube/config")).expanduser()

    def root(self) -> api.Clients:
        if self._root is None:
            self._root = api.root_clients(self._kubeconfig(), self.settings.context)
        return self._root

    @staticmethod
    def master(ctx: Context) -> api.Clients:
        return api.master_clients(ctx)

    def _call(self, what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        """A root-cluster call whose failure is one line naming the root cluster."""
        try:
            return call(*args, _request_timeout=30, **kwargs)
        except ApiException as exc:
            raise HostError(f"the root cluster refused to {what}: {exc.status} {api.reason(exc)}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise HostError(f"the root cluster ({self._kubeconfig()}) did not answer when asked to {what} "
                            f"({api.unreachable(exc)})") from None

    # Start ------------------------------------------------------------------------

    def render(self, ctx: Context, *, image: str) -> dict:
        """The StatefulSet, from this variant's template."""
        path = objects.template_path(self.own_template(), self.template_file)
        values = {"namespace": self.settings.namespace, "labels": objects.labels(ctx),
                  "selector": objects.selector(ctx), "image": image, "master": ctx.state.endpoint,
                  **self.template_values(ctx)}
        manifest = objects.render(path, self.template_setting, values)
        self.check(manifest, path)
        return manifest

    def plan(self, ctx: Context) -> list[str]:
        ns = self.settings.namespace
        root = self.settings.kubeconfig or "~/.kube/config"
        bindings = ", ".join(objects.BINDINGS)
        return [
            f"- on the kubemark master: Secret kube-system/bootstrap-token-<id>, ClusterRoleBindings {bindings}",
            f"- on the root cluster ({root}): Namespace {ns} (unless it is there), Secret {ns}/{objects.SECRET}, "
            f"ConfigMap {ns}/{objects.CONFIGMAP}, StatefulSet {ns}/{self.statefulset} "
            f"{self.scaled(ctx.settings.nodes)}",
        ]

    def preflight(self, ctx: Context) -> None:
        if not self.settings.image:
            raise ConfigError(
                "pods.image is not set: push the hollow-node image with `kubemark-up image push "
                "REGISTRY/kubemark:TAG` (or name an existing one) and set pods.image to it"
            )
        self.refuse(ctx)
        root = self.root()
        namespace = self.settings.namespace
        # Namespaced reads only: a user with rights in this one namespace must do (see
        # _namespace_exists); these also say whether the root cluster answers.
        existing = api.first_statefulset(root, namespace, objects.STATEFULSETS, self._kubeconfig())
        if existing is not None:
            labels = existing.metadata.labels if existing.metadata else None
            owner = (labels or {}).get(objects.CLUSTER_LABEL, "someone else")
            raise ConfigError(
                f"namespace {namespace} of the root cluster already holds the hollow nodes of {owner}: "
                "set pods.namespace to another one"
            )
        self.render(ctx, image=self.settings.image)  # a broken template is bad input: say so now
        self._image(ctx)  # an image the registry says it lacks is bad input too

    def prepare(self, ctx: Context, names: list[str]) -> None:
        pinned = self._image(ctx)["pods"] or ""
        ctx.save()
        self._bootstrap_on_master(ctx)
        self._objects_on_root(ctx, pinned, len(names))

    def _image(self, ctx: Context) -> dict[str, str | None]:
        """pods.image as its registry knows it, recorded in the state (by preflight, once):
        the reference, its digest, and what the pods run; the very image the digest
        names, whatever the tag points at later. Refuses an image the registry says
        it does not hold; one whose registry this machine cannot read is left to the
        root cluster, with a warning."""
        reference = self.settings.image or ""
        if ctx.state.image.get("reference") == reference:
            return ctx.state.image
        try:
            crane = binaries.tool("crane", ctx.settings, ctx.dir.home, ctx.ui)
            found = image_mod.lookup(reference, crane=crane)
        except BinaryError as exc:
            found = image_mod.Lookup(None, why=f"no crane: {exc.message}")
        if found.missing:
            push = "" if "@" in reference else f"push it with `kubemark-up image push {reference}`, or "
            raise ConfigError(f"pods.image {reference}: its registry has no such image ({push}name one it holds)")
        digest = found.digest
        if digest is None:
            ctx.ui.warn(f"cannot look up {reference} in its registry from here ({found.why}): the pods use it as it "
                        "is, and the root cluster says whether it can pull it")
            if "@sha256:" in reference:
                digest = reference.split("@", 1)[1]
        pinned = f"{image_mod.repository(reference)}@{digest}" if digest else reference
        ctx.state.image = {"reference": reference, "digest": digest, "pods": pinned}
        return ctx.state.image

    def _bootstrap_on_master(self, ctx: Context) -> None:
        """A bootstrap token and the bindings of the kubelet's TLS bootstrap, and of the
        node-problem-detectors' identity."""
        clients = self.master(ctx)
        token_id, token_secret = objects.new_token()
        pki.write_secret(ctx.dir.pki / "bootstrap-token", f"{token_id}.{token_secret}".encode())
        self._ensure(ctx, "master", objects.token_secret(ctx, token_id, token_secret),
                     clients.core.create_namespaced_secret, namespace="kube-system")
        for binding in objects.bindings(ctx):
            self._ensure(ctx, "master", binding, clients.rbac.create_cluster_role_binding)

    def _objects_on_root(self, ctx: Context, image: str, nodes: int) -> None:
        root, namespace = self.root(), self.settings.namespace
        if not self._namespace_exists():
            self._ensure(ctx, "root", objects.namespace(ctx, namespace), root.core.create_namespace)
        token = (ctx.dir.pki / "bootstrap-token").read_text().strip()
        data = {**objects.kubeconfigs(ctx, token), **self.identity_files(ctx, token)}
        self._ensure(ctx, "root", objects.secret(ctx, namespace, data), root.core.create_namespaced_secret,
                     namespace=namespace)
        config = {**objects.node_config(ctx), **self.config_files(ctx, nodes)}
        self._ensure(ctx, "root", objects.configmap(ctx, namespace, config), root.core.create_namespaced_config_map,
                     namespace=namespace)
        self._ensure(ctx, "root", self.render(ctx, image=image), root.apps.create_namespaced_stateful_set,
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
                    raise ComponentError(f"the kubemark master refused to {what}: {exc.status} {api.reason(exc)}") from None

    def _namespace_exists(self) -> bool:
        """Whether pods.namespace is on the root cluster. A user with rights in that one
        namespace may be refused the Namespace itself (a cluster-scope object): then
        it is there if its contents can be read, since namespaced rights come from a
        RoleBinding, which lives in the namespace and goes with it."""
        root, namespace = self.root(), self.settings.namespace
        try:
            root.core.read_namespace(namespace, _request_timeout=30)
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            if exc.status != 403:
                raise HostError(f"the root cluster refused to read namespace {namespace}: "
                                f"{exc.status} {api.reason(exc)}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise HostError(f"the root cluster ({self._kubeconfig()}) did not answer when asked for namespace "
                            f"{namespace} ({api.unreachable(exc)})") from None
        self._call(f"read StatefulSets in namespace {namespace} (nor the namespace itself)",
                   root.apps.list_namespaced_stateful_set, namespace, limit=1)
        return True

    def start(self, ctx: Context, names: list[str]) -> None:
        """One wave: the StatefulSet scaled up to as many pods as carry every node
        started so far."""
        ctx.state.nodes = list(dict.fromkeys([*ctx.state.nodes, *names]))
        ctx.save()
        replicas = self.replicas(len(ctx.state.nodes))
        self._call(f"scale {self.statefulset} to {replicas}", self.root().apps.patch_namespaced_stateful_set_scale,
                   self.statefulset, self.settings.namespace, body={"spec": {"replicas": replicas}})

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
            try:
                errors += self._delete(ctx, resource.details)
            except KubemarkUpError as exc:
                errors.append(exc.message)
                continue
            ctx.forget(resource)
        return errors

    def _sweep(self, ctx: Context) -> list[str]:
        """Without a state to go by: what in the namespace carries this cluster's uid."""
        namespace, errors = self.settings.namespace, []
        statefulsets = [("StatefulSet", name) for name in objects.STATEFULSETS]
        for kind, name in (*statefulsets, ("Secret", objects.SECRET), ("ConfigMap", objects.CONFIGMAP),
                           ("Namespace", namespace)):
            details = {"cluster": "root", "object_kind": kind, "name": name,
                       "namespace": None if kind == "Namespace" else namespace}
            # In a sweep, what is not ours is simply not ours: no problem to report; nor
            # is a namespace this user may not read (one it could not have made).
            errors += [e for e in self._delete(ctx, details) if "does not carry" not in e
                       and not (kind == "Namespace" and e.startswith(f"could not read Namespace {namespace} (403"))]
        return errors

    def _delete(self, ctx: Context, details: dict) -> list[str]:
        if details["cluster"] != "master":
            return api.delete(ctx, self.root(), details)
        if not ctx.dir.kubeconfig.exists():
            return []  # the master, and with it these objects, are gone
        try:
            clients = self.master(ctx)
        except (OSError, kube_config.ConfigException):
            return []
        return api.delete(ctx, clients, details)

    # Watching ---------------------------------------------------------------------

    def _pods(self, ctx: Context) -> list[dict]:
        selector = ",".join(f"{k}={v}" for k, v in objects.selector(ctx).items())
        response: Any = self._call("list the hollow-node pods", self.root().core.list_namespaced_pod,
                                   self.settings.namespace, label_selector=selector, _preload_content=False)
        return list(json.loads(response.data)["items"])

    def _log_tail(self, pod: str, container: str, *, previous: bool = False, lines: int = 15) -> str:
        return self._log(pod, container, previous=previous, tail_lines=lines)

    def _log(self, pod: str, container: str, **options: Any) -> str:
        """A container's log (read_namespaced_pod_log's options); '' when it cannot be read now."""
        try:
            text = self.root().core.read_namespaced_pod_log(pod, self.settings.namespace, container=container,
                                                            _request_timeout=30, **options)
        except api.TRANSIENT:
            return ""
        return str(text)

    def failed(self, ctx: Context) -> dict[str, NodeFailure]:
        failed: dict[str, NodeFailure] = {}
        for pod in self._pods(ctx):
            name = pod["metadata"]["name"]
            failure = next((NodeFailure(
                f"the root cluster cannot pull {pulled.image}: {pulled.cause}",
                f"pod {self.settings.namespace}/{name} container {pulled.containers[0]}",
                pulled.message,
            ) for pulled in pulls.pull_failures(pod) if pulled.permanent), None)
            if failure is not None:  # pulling again cannot help: fail now, not when the wait runs out
                for node in self.nodes_of(ctx, name):
                    failed[node] = failure
                continue
            for status in (pod.get("status") or {}).get("containerStatuses") or []:
                waiting = (status.get("state") or {}).get("waiting") or {}
                if status.get("restartCount", 0) >= CRASH_LOOP_RESTARTS and waiting.get("reason") == "CrashLoopBackOff":
                    failure = NodeFailure(
                        f"its {self.whose(name)}{status['name']} container is crash-looping "
                        f"({status['restartCount']} restarts)",
                        f"pod {self.settings.namespace}/{name} container {status['name']}",
                        self._log_tail(name, status["name"], previous=True),
                    )
                    for node in self.nodes_of(ctx, name):
                        failed[node] = failure
                    break
        return failed

    def progress(self, ctx: Context) -> tuple[str, int] | None:
        running = [pod["metadata"]["name"] for pod in self._pods(ctx)
                   if (pod.get("status") or {}).get("phase") == "Running"]
        return self.running, sum(len(self.nodes_of(ctx, pod)) for pod in running)

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
            problems += [pulled.line() for pulled in pulls.pull_failures(pod)]  # once per image, not per container
            for container in status.get("containerStatuses") or []:
                waiting = (container.get("state") or {}).get("waiting") or {}
                if waiting.get("reason") == "CrashLoopBackOff":
                    tail = self._log_tail(name, container["name"], previous=True).splitlines()[-3:]
                    problems.append(f"{container['name']}: crash-looping; last lines: " + " | ".join(tail))
            if problems:
                lines.append(f"pod {name} ({phase}): " + "; ".join(dict.fromkeys(problems)))
        summary = ", ".join(f"{count} {phase}" for phase, count in counts.items())
        return "\n".join([f"{self.kind}: {summary}", *lines[:10], *(["..."] if len(lines) > 10 else [])])

    def locate(self, ctx: Context, node: str) -> NodeLocation:
        namespace = self.settings.namespace
        name, carries = self.pod_of(ctx, node)
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
                except api.TRANSIENT:
                    continue
                target = out / f"{name}.{container['name']}.log"
                target.write_text(str(text))
                written.append(target)
        return written
