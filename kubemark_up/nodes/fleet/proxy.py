"""The rest of a hollow node: kube-proxy's watches (node-traffic.md section 4: Services
and EndpointSlices with the label selectors kube-proxy uses, and ServiceCIDRs, as the
stock v1.36 hollow proxy opens them) under the kube-proxy identity, and
node-problem-detector's heartbeat: a PATCH of its conditions on the node's status
every 5 minutes, under its own identity."""

from __future__ import annotations

import asyncio
import logging
import random

from kubemark_up.nodes.fleet.client import ApiError, Client
from kubemark_up.nodes.fleet.kubelet import now
from kubemark_up.nodes.fleet.watch import Reflector

log = logging.getLogger(__name__)

# kube-proxy skips headless Services and those another proxy serves.
PROXY_SELECTOR = "!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name"
NPD_HEARTBEAT = 300.0  # s: --k8s-exporter-heartbeat-period
NPD_CONDITIONS = (
    ("KernelDeadlock", "KernelHasNoDeadlock", "kernel has no deadlock"),
    ("ReadonlyFilesystem", "FilesystemIsNotReadOnly", "Filesystem is not read-only"),
)


class HollowProxy:
    def __init__(self, node: str, client: Client) -> None:
        self.node, self.api = node, client
        self.reflectors = [
            Reflector(client, "/api/v1/services", label_selector=PROXY_SELECTOR),
            Reflector(client, "/apis/discovery.k8s.io/v1/endpointslices", label_selector=PROXY_SELECTOR),
            Reflector(client, "/apis/networking.k8s.io/v1/servicecidrs"),
        ]

    async def run(self) -> None:
        await asyncio.gather(*(reflector.run() for reflector in self.reflectors))


class HollowNPD:
    def __init__(self, node: str, client: Client, counters: dict[str, int]) -> None:
        self.node, self.api, self.counters = node, client, counters
        self.since = ""

    async def run(self, registered: asyncio.Event) -> None:
        await registered.wait()
        while True:
            try:
                await self._heartbeat()
            except ApiError as exc:
                log.info("%s: node-problem-detector: %s", self.node, exc)
            await asyncio.sleep(NPD_HEARTBEAT * (1 + random.uniform(0, 0.04)))

    async def _heartbeat(self) -> None:
        stamp = now()
        self.since = self.since or stamp
        conditions = [{"type": kind, "status": "False", "reason": reason, "message": message,
                       "lastHeartbeatTime": stamp, "lastTransitionTime": self.since}
                      for kind, reason, message in NPD_CONDITIONS]
        self.counters["npd-patch"] = self.counters.get("npd-patch", 0) + 1
        await self.api.request("PATCH", f"/api/v1/nodes/{self.node}/status", body={"status": {"conditions": conditions}},
                               content_type="application/strategic-merge-patch+json")
