"""The fleet process: `python -m kubemark_up.nodes.fleet CONFIG.json` runs the hollow
nodes CONFIG lists until SIGTERM. Node start-up is spread over the configured window so
that a fleet does not arrive as one thundering herd. Every 30 s it writes a status file
beside its log (nodes registered, open watches, requests by kind), read by the engine
and the tests."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import resource
import signal
import sys
import time
from pathlib import Path

from kubemark_up.nodes.fleet.client import Client
from kubemark_up.nodes.fleet.kubelet import HollowKubelet, NodeSpec
from kubemark_up.nodes.fleet.proxy import HollowNPD, HollowProxy

log = logging.getLogger("kubemark_up.fleet")
STATUS_EVERY = 30.0


def _raise_open_files_limit() -> None:
    """Three connections per node: the default soft limit of 1,024 files is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Fleet:
    def __init__(self, config: dict) -> None:
        self.config = config
        self.counters: dict[str, int] = {}
        self.kubelets: list[HollowKubelet] = []
        self.proxies: list[HollowProxy] = []
        self.clients: list[Client] = []
        self.tasks: list[asyncio.Task] = []

    def _client(self, identity: dict, agent: str) -> Client:
        client = Client(server=self.config["server"], ca=self.config["ca"], cert=identity["cert"], key=identity["key"],
                        user_agent=agent)
        self.clients.append(client)
        return client

    async def _start_node(self, node: dict, delay: float) -> None:
        await asyncio.sleep(delay)
        version = self.config["version"]
        spec = NodeSpec(name=node["name"], address=node["address"], version=version,
                        max_pods=self.config.get("max_pods", 110))
        kubelet = HollowKubelet(spec, self._client(node, f"kubelet/{version} (linux/amd64) kubemark-up-fleet"),
                                self.counters)
        self.kubelets.append(kubelet)
        proxy = HollowProxy(spec.name, self._client(self.config["proxy"], f"kube-proxy/{version} kubemark-up-fleet"))
        self.proxies.append(proxy)
        loop = asyncio.get_running_loop()
        self.tasks.append(loop.create_task(proxy.run()))
        if npd := self.config.get("npd"):
            npd_node = HollowNPD(spec.name, self._client(npd, "node-problem-detector kubemark-up-fleet"), self.counters)
            self.tasks.append(loop.create_task(npd_node.run(kubelet.registered)))
        await kubelet.run()

    def status(self) -> dict:
        watches = sum(k.open_watches() for k in self.kubelets) + sum(len(p.reflectors) for p in self.proxies)
        return {"time": time.time(), "pid": os.getpid(), "nodes": len(self.config["nodes"]),
                "registered": sum(k.registered.is_set() for k in self.kubelets),
                "pods": sum(len(k.pods) for k in self.kubelets), "open_watches": watches,
                "requests": dict(sorted(self.counters.items()))}

    async def run(self, status_file: Path) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        window = float(self.config.get("start_window", 10))
        for node in self.config["nodes"]:
            task = loop.create_task(self._start_node(node, random.uniform(0, window)))
            task.add_done_callback(_log_failure)
            self.tasks.append(task)
        while not stop.is_set():
            status_file.write_text(json.dumps(self.status()))
            try:
                await asyncio.wait_for(stop.wait(), STATUS_EVERY)
            except TimeoutError:
                pass
        log.info("stopping %d hollow nodes", len(self.kubelets))
        for kubelet in self.kubelets:
            await kubelet.stop()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await asyncio.gather(*(client.close() for client in self.clients), return_exceptions=True)
        status_file.write_text(json.dumps(self.status()))


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("a hollow node failed to start: %r", task.exception())


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m kubemark_up.nodes.fleet CONFIG.json", file=sys.stderr)
        return 2
    config_path = Path(argv[0])
    config = json.loads(config_path.read_text())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    _raise_open_files_limit()
    fleet = Fleet(config)
    log.info("fleet of %d hollow nodes, starting over %ss", len(config["nodes"]), config.get("start_window", 10))
    asyncio.run(fleet.run(config_path.with_suffix(".status.json")))
    return 0
