"""A whole real node, for measuring what one sends its master: the root cluster's
real kubelet (rootcluster.py), with beside it

    kube-proxy             the real one (built by the Go recipe), iptables mode, in a
                           network namespace of its own (kmup-proxy) so that its rules
                           never touch the host's; identity system:kube-proxy
    node-problem-detector  the real one, run as the hollow-node image runs it (the
                           same dummy system-log monitor, its own identity bound to
                           system:node-problem-detector)
    master                 audit_nodes on: the apiserver logs every request of the
                           three (master-manifests/audit-policy.yaml), and listens on
                           the host end of a veth (PROXY_HOST) that the namespace's
                           end reaches

Everything is undone by RootCluster.stop (the namespace, and with it the veth, is
recorded before it is made, so a killed run's namespace is removed by the next one).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from kubemark_up import binaries, config, kubeconfig, pki
from kubemark_up.nodes.rootcluster import objects
from kubemark_up.providers.registry import resolve_settings
from kubemark_up.ui import UI
from tests.support.rootcluster import CLUSTER_CIDR, NODE, RootCluster, _free_port, _run, _wait

NETNS = "kmup-proxy"
VETH_HOST, VETH_NS = "kmup-px0", "kmup-px1"
PROXY_HOST, PROXY_NS = "10.245.0.1", "10.245.0.2"  # a /30 of their own, outside the pod and service ranges
NPD_BINDING = "kubemark-up:node-problem-detector"
CLUSTER_DNS = "10.0.0.10"  # in the master's default service range, 10.0.0.0/16


@dataclass
class RealNode(RootCluster):
    netns: tuple[str, ...] = (NETNS,)
    name: str = "real"
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def audit_log(self) -> Path:
        return self.cli.home / self.name / "logs" / "audit.log"

    @property
    def endpoint(self) -> str:
        return json.loads((self.cli.home / self.name / "state.json").read_text())["endpoint"]

    @property
    def apiserver_port(self) -> int:
        return int(self.endpoint.rsplit(":", 1)[1])

    def _steps(self) -> list:
        base = super()._steps()
        at = base.index(self._master)
        return [*base[:at], self._proxy_namespace, *base[at:], self._kube_proxy, self._node_problem_detector]

    def _master_env(self) -> dict[str, str]:
        # The apiserver at the veth's host end: reachable from the host and from kube-proxy's namespace.
        return {**super()._master_env(), "KUBEMARK_UP_AUDIT_NODES": "true", "KUBEMARK_UP_LOCAL_ADDRESS": PROXY_HOST}

    def _kubelet_settings(self) -> dict:
        # A real node's kubelet names the cluster's DNS service; without it every sync of a
        # ClusterFirst pod sends a MissingClusterDNS event. Nothing answers there: the pause
        # pods never ask, and what leaves the bridge is dropped.
        return {"clusterDNS": [CLUSTER_DNS], "clusterDomain": "cluster.local"}

    def _proxy_namespace(self) -> None:
        self._undo.append(lambda: _run("ip", "netns", "delete", NETNS, check=False))
        _run("ip", "netns", "add", NETNS)
        _run("ip", "link", "add", VETH_HOST, "type", "veth", "peer", "name", VETH_NS, "netns", NETNS)
        _run("ip", "addr", "add", f"{PROXY_HOST}/30", "dev", VETH_HOST)
        _run("ip", "link", "set", VETH_HOST, "up")
        inside = ("ip", "-n", NETNS)
        _run(*inside, "addr", "add", f"{PROXY_NS}/30", "dev", VETH_NS)
        _run(*inside, "link", "set", VETH_NS, "up")
        _run(*inside, "link", "set", "lo", "up")

    def _identity_kubeconfig(self, stem: str, user: str, path: Path) -> Path:
        authority = pki.PKI(self.cli.home / self.name / "pki")
        authority.issue(pki.Identity(stem, user))
        kubeconfig.write(path, kubeconfig.embedded(
            server=self.endpoint, ca=authority.cert_path("ca"), cert=authority.cert_path(stem),
            key=authority.key_path(stem), user=user, cluster=self.name,
        ))
        return path

    def tool_path(self, name: str) -> Path:
        settings = resolve_settings(flags={}, environ={"KUBEMARK_UP_BIN_DIR": str(self.cli.bin_dir)}
                                    if self.cli.bin_dir else {})
        return binaries.tool(name, settings, config.home_dir(), UI())

    def _kube_proxy(self) -> None:
        kubeconfig_path = self._identity_kubeconfig("kube-proxy", "system:kube-proxy",
                                                    self.folder / "kube-proxy.kubeconfig")
        self.ports["kube-proxy-metrics"] = metrics = _free_port()
        proxy_config = self.folder / "kube-proxy.yaml"
        proxy_config.write_text(yaml.safe_dump({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(kubeconfig_path)},
            "hostnameOverride": NODE, "mode": "iptables", "clusterCIDR": CLUSTER_CIDR,
            # Leave the conntrack sysctls as they are: some are machine-wide.
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
            "metricsBindAddress": f"127.0.0.1:{metrics}", "healthzBindAddress": f"127.0.0.1:{_free_port()}",
        }))
        proxy = self.tool_path("kube-proxy")
        self._spawn("kube-proxy", ["ip", "netns", "exec", NETNS, str(proxy), f"--config={proxy_config}", "--v=2"])

        def syncing() -> bool:
            got = _run("ip", "netns", "exec", NETNS, "iptables-save", "-t", "nat", check=False)
            return "KUBE-SERVICES" in got.stdout and "default/kubernetes" in got.stdout

        _wait("kube-proxy's rules", syncing, timeout=90, log=self.folder / "kube-proxy.log")

    def _node_problem_detector(self) -> None:
        role, kind, subject = objects.BINDINGS[NPD_BINDING]
        binding = self.folder / "npd-binding.yaml"
        binding.write_text(yaml.safe_dump({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": NPD_BINDING},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": subject}],
        }))
        applied = self.kubectl("apply", "-f", str(binding))
        if applied.returncode != 0:
            raise RuntimeError(f"the node-problem-detector binding was refused: {applied.stderr.strip()}")
        auth = self._identity_kubeconfig("node-problem-detector", pki.NPD_USER, self.folder / "npd.kubeconfig")
        monitor = self.folder / "kernel.monitor"
        monitor.write_text(json.dumps(objects._KERNEL_MONITOR))  # the hollow-node image's dummy monitor
        npd = self.tool_path("node-problem-detector")
        self._spawn("node-problem-detector", [
            str(npd), f"--config.system-log-monitor={monitor}",
            f"--apiserver-override={self.endpoint}?inClusterConfig=false&auth={auth}",
            f"--hostname-override={NODE}", "--port=0", "--prometheus-port=0",
        ])

        _wait("node-problem-detector", lambda: (self.folder / "node-problem-detector.log").exists(), timeout=10)
        if self.processes["node-problem-detector"].poll() is not None:
            raise RuntimeError("node-problem-detector exited at once:\n"
                               + (self.folder / "node-problem-detector.log").read_text(errors="replace")[-2000:])

    def pids(self) -> dict[str, int]:
        """The node's components by process id (kube-proxy's is the one `ip netns exec` became)."""
        return {name: self.processes[name].pid for name in ("kubelet", "kube-proxy", "node-problem-detector")}
