"""One hollow kubelet of the fleet, as a real v1.36 kubelet loads the apiserver
(node-traffic.md sections 1-3): five reflectors (its Node, its Pods, Services,
CSIDrivers, RuntimeClasses), registration, the Lease renewed every 10 s with jitter,
node status computed every 10 s and PATCHed on change or every 5 minutes, the node's
Events, and for each pod bound to it the status PATCHes, the TokenRequest, the
per-object ConfigMap and Secret watches and the Events a real kubelet sends; on
deletion the final status and the DELETE with grace 0 and the UID precondition."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
import random
import secrets
from dataclasses import dataclass, field
from typing import Any

from kubemark_up.nodes.fleet.client import ApiError, Client
from kubemark_up.nodes.fleet.watch import Reflector

log = logging.getLogger(__name__)

LEASE_NAMESPACE = "kube-node-lease"
LEASE_SECONDS = 40
RENEW = 10.0  # s: 0.25 x the lease duration
JITTER = 0.04
REPORT_EVERY = 300.0  # s: nodeStatusReportFrequency
TOKEN_SECONDS = 3607


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class NodeSpec:
    name: str
    address: str  # a unique loopback address: anything that dials it stays on the machine
    version: str  # the kubelet version it reports
    max_pods: int = 110
    cpu: str = "4"
    memory: str = "15Gi"


def _conditions(ready: bool, heartbeat: str, since: dict[str, str]) -> list[dict]:
    table = [
        ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        ("Ready", "True", "KubeletReady", "kubelet is posting ready status")
        if ready else ("Ready", "False", "KubeletNotReady", "container runtime status check may not have completed yet"),
    ]
    return [{"type": kind, "status": status, "reason": reason, "message": message, "lastHeartbeatTime": heartbeat,
             "lastTransitionTime": since.setdefault(f"{kind}={status}", heartbeat)}
            for kind, status, reason, message in table]


@dataclass
class PodState:
    uid: str
    ip: str = ""
    started: str = ""
    running: bool = False
    deleting: bool = False
    refs: set[tuple[str, str, str]] = field(default_factory=set)  # (resource, namespace, name)


class HollowKubelet:
    def __init__(self, spec: NodeSpec, client: Client, counters: dict[str, int]) -> None:
        self.spec, self.api, self.counters = spec, client, counters
        self.node: dict = {}
        self.lease: dict | None = None
        self.since: dict[str, str] = {}
        self.ready = False
        self.reported_at = 0.0
        self.reported: tuple = ()
        self.pods: dict[str, PodState] = {}  # namespace/name -> state
        self.object_watches: dict[tuple[str, str, str], tuple[int, Reflector]] = {}
        self.ips_used: set[str] = set()
        self.tasks: set[asyncio.Task] = set()
        self.reflectors: list[Reflector] = []
        self.registered = asyncio.Event()

    # Running ---------------------------------------------------------------------

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("%s: %r", self.spec.name, task.exception())

    async def run(self) -> None:
        name = self.spec.name
        nodes = Reflector(self.api, "/api/v1/nodes", on_event=self._on_node, field_selector=f"metadata.name={name}")
        self.reflectors = [
            nodes,
            Reflector(self.api, "/api/v1/services", field_selector="spec.clusterIP!=None"),
            Reflector(self.api, "/apis/storage.k8s.io/v1/csidrivers"),
            Reflector(self.api, "/apis/node.k8s.io/v1/runtimeclasses"),
        ]
        for reflector in self.reflectors:
            self._spawn(reflector.run())
        await nodes.synced.wait()
        pods = Reflector(self.api, "/api/v1/pods", on_event=self._on_pod, field_selector=f"spec.nodeName={name}")
        self.reflectors.append(pods)
        self._spawn(pods.run())
        await self._register()
        self._spawn(self._lease_loop())
        await self._events_at_start()
        self._spawn(self._status_loop())

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _call(self, what: str, method: str, path: str, **kwargs: Any) -> dict:
        self.counters[what] = self.counters.get(what, 0) + 1
        return await self.api.request(method, path, **kwargs)

    # Registration and heartbeats --------------------------------------------------

    def _status(self) -> dict:
        spec = self.spec
        capacity = {"cpu": spec.cpu, "memory": spec.memory, "pods": str(spec.max_pods), "ephemeral-storage": "100Gi",
                    "hugepages-1Gi": "0", "hugepages-2Mi": "0"}
        return {
            "capacity": capacity, "allocatable": capacity,
            "conditions": _conditions(self.ready, now(), self.since),
            "addresses": [{"type": "InternalIP", "address": spec.address}, {"type": "Hostname", "address": spec.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {"machineID": spec.name, "systemUUID": spec.name, "bootID": spec.name, "kernelVersion": "6.1.0",
                         "osImage": "kubemark-up fleet", "containerRuntimeVersion": "fake://1.0",
                         "kubeletVersion": spec.version, "kubeProxyVersion": spec.version,
                         "operatingSystem": "linux", "architecture": "amd64"},
        }

    async def _register(self) -> None:
        spec = self.spec
        body = {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": spec.name, "labels": {
                "kubernetes.io/hostname": spec.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64"},
                "annotations": {"volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
            "spec": {"providerID": f"kubemark-up://{spec.name}"},
            "status": self._status(),
        }
        delay = 0.1
        while True:
            try:
                self.node = await self._call("register", "POST", "/api/v1/nodes", body=body)
                break
            except ApiError as exc:
                if exc.status == 409:  # a restarted fleet takes its node back
                    self.node = await self._call("get-node", "GET", f"/api/v1/nodes/{spec.name}")
                    break
                log.info("%s: registration: %s", spec.name, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 7)
        self.registered.set()
        # fastStatusUpdateOnce: one PATCH the moment the runtime reports ready.
        self.ready = True
        await self._patch_status(force=True)
        await self._event("Node", "", spec.name, self.node["metadata"].get("uid", ""), "NodeReady",
                          f"Node {spec.name} status is now: NodeReady")

    async def _events_at_start(self) -> None:
        name, uid = self.spec.name, self.node["metadata"].get("uid", "")
        for reason, message in (("Starting", "Starting kubelet."),
                                ("NodeHasSufficientMemory", f"Node {name} status is now: NodeHasSufficientMemory"),
                                ("NodeHasNoDiskPressure", f"Node {name} status is now: NodeHasNoDiskPressure"),
                                ("NodeHasSufficientPID", f"Node {name} status is now: NodeHasSufficientPID"),
                                ("NodeAllocatableEnforced", "Updated Node Allocatable limit across pods")):
            await self._event("Node", "", name, uid, reason, message)

    async def _lease_loop(self) -> None:
        await asyncio.sleep(random.uniform(0, RENEW))
        path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases"
        while True:
            try:
                await self._renew(path)
            except ApiError as exc:
                log.info("%s: lease: %s", self.spec.name, exc)
                self.lease = None
            # sliding: the next renewal counts from the end of this one
            await asyncio.sleep(RENEW * (1 + random.uniform(0, JITTER)))

    async def _renew(self, path: str) -> None:
        name = self.spec.name
        if self.lease is None:
            try:
                self.lease = await self._call("get-lease", "GET", f"{path}/{name}")
            except ApiError as exc:
                if exc.status != 404:
                    raise
                node = await self._call("get-node", "GET", f"/api/v1/nodes/{name}")
                self.lease = await self._call("create-lease", "POST", path, body={
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": name, "namespace": LEASE_NAMESPACE, "ownerReferences": [
                        {"apiVersion": "v1", "kind": "Node", "name": name, "uid": node["metadata"]["uid"]}]},
                    "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": micro_now()},
                })
                return
        self.lease["spec"]["renewTime"] = micro_now()
        self.lease = await self._call("renew-lease", "PUT", f"{path}/{name}", body=self.lease)

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(RENEW * (1 + random.uniform(0, JITTER)))
            try:
                await self._patch_status()
            except ApiError as exc:
                log.info("%s: node status: %s", self.spec.name, exc)

    def _comparable(self) -> tuple:
        """What the kubelet compares, heartbeat times aside; the podCIDR too."""
        status = self._status()
        conditions = tuple((c["type"], c["status"], c["reason"]) for c in status["conditions"])
        return conditions, tuple(a["address"] for a in status["addresses"]), (self.node.get("spec") or {}).get("podCIDR")

    async def _patch_status(self, *, force: bool = False) -> None:
        loop = asyncio.get_running_loop()
        current = self._comparable()
        if not force and current == self.reported and loop.time() - self.reported_at < REPORT_EVERY:
            return
        conditions = _conditions(self.ready, now(), self.since)
        patch = {"status": {"$setElementOrder/conditions": [{"type": c["type"]} for c in conditions],
                            "conditions": conditions}}
        if not self.reported:
            patch["status"].update({k: v for k, v in self._status().items() if k != "conditions"})
        self.node = await self._call("patch-node-status", "PATCH", f"/api/v1/nodes/{self.spec.name}/status", body=patch,
                                     content_type="application/strategic-merge-patch+json")
        self.reported, self.reported_at = current, loop.time()

    def _on_node(self, kind: str, obj: dict) -> None:
        if kind == "SYNC":
            items = obj.get("items") or []
            if items:
                self.node = items[0]
        elif kind in ("ADDED", "MODIFIED"):
            self.node = obj

    # Events --------------------------------------------------------------------------

    async def _event(self, kind: str, namespace: str, name: str, uid: str, reason: str, message: str,
                     field_path: str = "") -> None:
        ns = namespace or "default"
        stamp = now()
        involved = {"kind": kind, "name": name, "uid": uid, "apiVersion": "v1"}
        if namespace:
            involved["namespace"] = namespace
        if field_path:
            involved["fieldPath"] = field_path
        body = {"apiVersion": "v1", "kind": "Event",
                "metadata": {"name": f"{name}.{secrets.token_hex(8)}", "namespace": ns},
                "involvedObject": involved, "reason": reason, "message": message, "type": "Normal",
                "source": {"component": "kubelet", "host": self.spec.name}, "firstTimestamp": stamp,
                "lastTimestamp": stamp, "count": 1, "reportingComponent": "kubelet",
                "reportingInstance": self.spec.name}
        try:
            await self._call("event", "POST", f"/api/v1/namespaces/{ns}/events", body=body)
        except ApiError as exc:
            log.info("%s: event %s: %s", self.spec.name, reason, exc)

    # Pods --------------------------------------------------------------------------------

    def _on_pod(self, kind: str, obj: dict) -> None:
        if kind == "SYNC":
            listed = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p for p in obj.get("items") or []}
            for key in set(self.pods) - set(listed):
                self._forget(key)
            for pod in listed.values():
                self._on_pod("MODIFIED", pod)
            return
        meta = obj["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        if kind == "DELETED":
            self._forget(key)
            return
        state = self.pods.get(key)
        if state is None or state.uid != meta["uid"]:
            if meta.get("deletionTimestamp"):
                self.pods[key] = PodState(uid=meta["uid"], deleting=True)
                self._spawn(self._delete_pod(obj))
                return
            state = self.pods[key] = PodState(uid=meta["uid"])
            self._spawn(self._start_pod(obj, state))
        elif meta.get("deletionTimestamp") and not state.deleting:
            state.deleting = True
            self._spawn(self._delete_pod(obj))

    def _forget(self, key: str) -> None:
        state = self.pods.pop(key, None)
        if state is None:
            return
        self.ips_used.discard(state.ip)
        for ref in state.refs:
            self._unwatch(ref)

    def _pod_ip(self) -> str:
        cidr = (self.node.get("spec") or {}).get("podCIDR")
        network = ipaddress.ip_network(cidr) if cidr else None
        if network is None:
            return ""
        for host in network.hosts():
            if str(host) not in self.ips_used and host != next(network.hosts()):
                self.ips_used.add(str(host))
                return str(host)
        return ""

    async def _start_pod(self, pod: dict, state: PodState) -> None:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        namespace, name = meta["namespace"], meta["name"]
        path = f"/api/v1/namespaces/{namespace}/pods/{name}"
        state.started = now()
        containers = spec.get("containers") or []
        await self._pod_status(path, state, containers, running=False)
        for ref in _references(pod):
            state.refs.add(ref)
            self._watch_object(ref)
        if any("serviceAccountToken" in source for volume in spec.get("volumes") or []
               for source in (volume.get("projected") or {}).get("sources") or []):
            account = spec.get("serviceAccountName") or "default"
            try:
                await self._call("token", "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token", body={
                    "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                    "spec": {"expirationSeconds": TOKEN_SECONDS,
                             "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": meta["uid"]}},
                })
            except ApiError as exc:
                log.info("%s: token for %s: %s", self.spec.name, name, exc)
        state.ip = self._pod_ip()
        for container in containers:
            where = f"spec.containers{{{container['name']}}}"
            image = container.get("image", "")
            for reason, message in (("Pulled", f'Container image "{image}" already present on machine'),
                                    ("Created", f"Created container: {container['name']}"),
                                    ("Started", f"Started container {container['name']}")):
                await self._event("Pod", namespace, name, meta["uid"], reason, message, where)
        if not state.deleting:
            state.running = True
            await self._pod_status(path, state, containers, running=True)

    async def _pod_status(self, path: str, state: PodState, containers: list[dict], *, running: bool,
                          terminated: bool = False) -> None:
        """GET, then a strategic merge patch with the UID precondition, as the status manager sends."""
        try:
            await self._call("get-pod", "GET", path)
            stamp = now()
            ready = "True" if running and not terminated else "False"
            statuses = []
            for container in containers:
                if terminated:
                    shown = {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": state.started,
                                            "finishedAt": stamp}}
                elif running:
                    shown = {"running": {"startedAt": stamp}}
                else:
                    shown = {"waiting": {"reason": "ContainerCreating"}}
                statuses.append({"name": container["name"], "image": container.get("image", ""),
                                 "imageID": "", "ready": running and not terminated, "restartCount": 0,
                                 "started": running and not terminated, "state": shown,
                                 **({"containerID": f"fake://{secrets.token_hex(16)}"} if running else {})})
            status: dict[str, Any] = {
                "phase": "Running" if running and not terminated else ("Succeeded" if terminated else "Pending"),
                "hostIP": self.spec.address, "hostIPs": [{"ip": self.spec.address}], "startTime": state.started,
                "qosClass": "BestEffort",
                "conditions": [
                    {"type": "PodReadyToStartContainers", "status": "True" if running else "False",
                     "lastTransitionTime": stamp},
                    {"type": "Initialized", "status": "True", "lastTransitionTime": state.started},
                    {"type": "Ready", "status": ready, "lastTransitionTime": stamp,
                     **({} if ready == "True" else {"reason": "ContainersNotReady"})},
                    {"type": "ContainersReady", "status": ready, "lastTransitionTime": stamp,
                     **({} if ready == "True" else {"reason": "ContainersNotReady"})},
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": state.started},
                ],
                "containerStatuses": statuses,
            }
            if running and state.ip:
                status["podIP"], status["podIPs"] = state.ip, [{"ip": state.ip}]
            await self._call("patch-pod-status", "PATCH", f"{path}/status",
                             body={"metadata": {"uid": state.uid}, "status": status},
                             content_type="application/strategic-merge-patch+json")
        except ApiError as exc:
            if exc.status not in (403, 404):  # 403: gone, so no longer bound to this node
                log.info("%s: pod status %s: %s", self.spec.name, path, exc)

    async def _delete_pod(self, pod: dict) -> None:
        meta = pod["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        path = f"/api/v1/namespaces/{namespace}/pods/{name}"
        containers = (pod.get("spec") or {}).get("containers") or []
        for container in containers:
            await self._event("Pod", namespace, name, meta["uid"], "Killing", f"Stopping container {container['name']}",
                              f"spec.containers{{{container['name']}}}")
        state = self.pods.get(f"{namespace}/{name}") or PodState(uid=meta["uid"])
        state.started = state.started or now()
        await self._pod_status(path, state, containers, running=True, terminated=True)
        try:
            await self._call("delete-pod", "DELETE", path, body={
                "apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                "preconditions": {"uid": meta["uid"]}})
        except ApiError as exc:
            if exc.status not in (404, 409):
                log.info("%s: delete %s: %s", self.spec.name, path, exc)

    # Per-object watches ------------------------------------------------------------------

    def _watch_object(self, ref: tuple[str, str, str]) -> None:
        count, reflector = self.object_watches.get(ref, (0, None))
        if reflector is None:
            resource, namespace, name = ref
            reflector = Reflector(self.api, f"/api/v1/namespaces/{namespace}/{resource}",
                                  field_selector=f"metadata.name={name}")
            self._spawn(reflector.run())
        self.object_watches[ref] = (count + 1, reflector)

    def _unwatch(self, ref: tuple[str, str, str]) -> None:
        count, reflector = self.object_watches.get(ref, (0, None))
        if reflector is None:
            return
        if count <= 1:
            del self.object_watches[ref]
            reflector.stop()
        else:
            self.object_watches[ref] = (count - 1, reflector)

    def open_watches(self) -> int:
        return len(self.reflectors) + len(self.object_watches)


def _references(pod: dict) -> set[tuple[str, str, str]]:
    """The ConfigMaps and Secrets a pod's volumes, env and pull secrets name: the kubelet
    watches each (and kube-root-ca.crt through the projected token volume)."""
    spec, namespace = pod.get("spec") or {}, pod["metadata"]["namespace"]
    refs: set[tuple[str, str, str]] = set()
    for volume in spec.get("volumes") or []:
        if (cm := volume.get("configMap")) and cm.get("name"):
            refs.add(("configmaps", namespace, cm["name"]))
        if (secret := volume.get("secret")) and secret.get("secretName"):
            refs.add(("secrets", namespace, secret["secretName"]))
        for source in (volume.get("projected") or {}).get("sources") or []:
            if (cm := source.get("configMap")) and cm.get("name"):
                refs.add(("configmaps", namespace, cm["name"]))
            if (secret := source.get("secret")) and secret.get("name"):
                refs.add(("secrets", namespace, secret["name"]))
    for container in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        for env in container.get("env") or []:
            source = env.get("valueFrom") or {}
            if (cm := source.get("configMapKeyRef")) and cm.get("name"):
                refs.add(("configmaps", namespace, cm["name"]))
            if (secret := source.get("secretKeyRef")) and secret.get("name"):
                refs.add(("secrets", namespace, secret["name"]))
        for env_from in container.get("envFrom") or []:
            if (cm := env_from.get("configMapRef")) and cm.get("name"):
                refs.add(("configmaps", namespace, cm["name"]))
            if (secret := env_from.get("secretRef")) and secret.get("name"):
                refs.add(("secrets", namespace, secret["name"]))
    for pull in spec.get("imagePullSecrets") or []:
        if pull.get("name"):
            refs.add(("secrets", namespace, pull["name"]))
    return refs
