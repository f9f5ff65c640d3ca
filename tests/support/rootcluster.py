"""A real root cluster for the pods engine's tests: one real Kubernetes node on this
machine, whose pods are real containers.

    registry     Debian docker-registry, plain HTTP on a loopback port
    pause image  a static C program built here with gcc, pushed to that registry
                 (nothing can be pulled from the internet)
    master       a kubemark-up cluster of its own with no hollow nodes
    node         the real kubelet (built by the Go recipe) with Debian containerd,
                 runc and CNI plugins: a bridge kmup-root0 at 10.244.0.1/24

Every path, socket and runtime folder of containerd, runc and the kubelet is under
this fixture's folder where they allow it; what they write elsewhere (the kubelet's
device-plugin socket, libcni's cache, shims' sockets) is found and removed, and the
host's iptables rule, bridge and ip_forward go back to what they were. Pods may only
talk to this machine: no masquerade, and a FORWARD rule drops what leaves the bridge.
Facts about running this on these machines: ../shared/reference/root-cluster.md.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from kubemark_up import binaries, config, image, kubeconfig, pki
from kubemark_up.providers.registry import resolve_settings
from kubemark_up.ui import UI
from tests.support.cli import CLI

BRIDGE = "kmup-root0"
GATEWAY = "10.244.0.1"
POD_SUBNET = "10.244.0.0/24"
CLUSTER_CIDR = "10.244.0.0/16"
NODE = "root-node"
CNI_NETWORK = "kmup-root"
PAUSE = "pause:3.10"
# One root cluster at a time on a machine (the bridge, the FORWARD rule and the kubelet's
# device-plugin socket are machine-wide): a lock serializes them, and a record of what the
# holder changed lets the next one undo a fixture that was killed before its stop.
LOCK = Path("/run/lock/kmup-root-cluster.lock")
RECORD = Path("/var/tmp/kmup-root-cluster.json")
FORWARD_RULE = ("FORWARD", "-i", BRIDGE, "!", "-o", BRIDGE, "-m", "comment", "--comment", "kubemark-up tests",
                "-j", "DROP")
# Where the kubelet, libcni and containerd's shims write whatever they are told: the
# device-plugin socket, the CNI result cache, the shims' sockets, log links. Each
# folder is removed if the fixture made it, else what is new in it under these names.
_OUTSIDE = {
    Path("/var/lib/kubelet"): (), Path("/var/lib/kubelet/device-plugins"): ("kubelet.sock",),
    Path("/var/lib/cni"): (), Path("/var/lib/cni/results"): (f"{CNI_NETWORK}-", "cni-loopback-"),
    Path("/run/containerd"): (), Path("/run/containerd/s"): ("",),
    Path("/var/log/pods"): (), Path("/var/log/containers"): (),
    Path("/run/netns"): (),  # `ip netns add` makes it (a sibling fixture's kube-proxy namespace)
}

_PAUSE_C = r"""
/* The sandbox container: sleeps until asked to stop, and reaps orphans meanwhile. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
static void leave(int signum) { (void)signum; _exit(0); }
static void reap(int signum) { (void)signum; while (waitpid(-1, NULL, WNOHANG) > 0) {} }
int main(void) {
  signal(SIGINT, leave);
  signal(SIGTERM, leave);
  signal(SIGCHLD, reap);
  for (;;) pause();
}
"""


def _free_port() -> int:
    """A free port below Linux's ephemeral range (where an outgoing connection could take
    it before the listener binds) and below kubemark-up's own (20000-32767)."""
    for port in random.sample(range(10000, 20000), 200):
        with socket.socket() as probe:
            try:
                probe.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 10000-19999")


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(list(argv), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()}")
    return result


def _wait(what: str, ready, timeout: float = 60, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.2)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:]) if log and log.exists() else ""
    raise RuntimeError(f"{what} was not ready after {timeout:.0f}s\n{tail}")


@dataclass
class RootCluster:
    folder: Path
    cli: CLI  # the kubemark-up CLI, in a home of the root cluster's own
    name: str = "root"
    registry_port: int = field(default_factory=_free_port)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    _undo: list = field(default_factory=list)
    # Network namespaces a sibling fixture makes (recorded before they exist, undone after a kill).
    netns: tuple[str, ...] = ()
    _lock_file: object = None

    @property
    def registry(self) -> str:
        return f"127.0.0.1:{self.registry_port}"

    @property
    def kubeconfig(self) -> Path:
        """The root cluster's admin kubeconfig (what a user gives the pods engine)."""
        return self.cli.home / self.name / "kubeconfig.kubemark"

    def kubectl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(["kubectl", "--kubeconfig", str(self.kubeconfig), *args], capture_output=True,
                              text=True, timeout=timeout)

    # Start ----------------------------------------------------------------------

    def start(self) -> None:
        self._lock()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._outside_before = {path: set(os.listdir(path)) if path.is_dir() else None for path in _OUTSIDE}
        try:
            for step in self._steps():
                step()
        except BaseException:
            self.stop()
            raise

    def _steps(self) -> list:
        """What start does, in order (a sibling fixture adds its own)."""
        return [self._registry, self._pause_image, self._master, self._network, self._containerd, self._kubelet]

    def _master_env(self) -> dict[str, str]:
        """The master's settings, as environment variables of `kubemark-up start`."""
        return {
            "KUBEMARK_UP_CLUSTER_CIDR": CLUSTER_CIDR,
            # Unresolvable node names must not send DNS queries off this machine.
            "KUBEMARK_UP_APISERVER_EXTRA_ARGS": "--kubelet-preferred-address-types=InternalIP,Hostname",
        }

    def _kubelet_settings(self) -> dict:
        """KubeletConfiguration fields a sibling fixture adds."""
        return {}

    def _lock(self, timeout: float = 1800) -> None:
        LOCK.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = LOCK.open("a")
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"another root cluster held {LOCK} for {timeout:.0f}s") from None
                time.sleep(1)
        if RECORD.exists():
            _undo_record(json.loads(RECORD.read_text()))
        RECORD.write_text(json.dumps({
            "folder": str(self.folder), "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text(),
            "absent": [str(path) for path in _OUTSIDE if not path.exists()], "netns": list(self.netns),
        }))

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = (self.folder / f"{name}.log").open("ab")
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.processes[name] = process
        return process

    def _registry(self) -> None:
        conf = self.folder / "registry.yml"
        conf.write_text(yaml.safe_dump({
            "version": 0.1, "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(self.folder / "registry")}},
            "http": {"addr": self.registry},
        }))
        self._spawn("registry", ["docker-registry", "serve", str(conf)])

        def answers() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.registry_port), timeout=1):
                    return True
            except OSError:
                return False

        _wait("the registry", answers, log=self.folder / "registry.log")

    def crane(self) -> Path:
        return binaries.tool("crane", resolve_settings(flags={}, environ={}), config.home_dir(), UI())

    def _pause_image(self) -> None:
        source = self.folder / "pause.c"
        source.write_text(textwrap.dedent(_PAUSE_C))
        binary = self.folder / "pause"
        _run("gcc", "-O2", "-static", "-o", str(binary), str(source))
        layout = image.build_layout(self.folder / "pause-image", {"pause": binary}, entrypoint="/pause", tag="3.10")
        image.push(layout, f"{self.registry}/{PAUSE}", crane=self.crane())

    def _master(self) -> None:
        result = self.cli.run("start", "--name", self.name, "--nodes", "0", timeout=300, **self._master_env())
        if result.returncode != 0:
            raise RuntimeError(f"the root cluster's master did not start:\n{result.stderr}")
        self._undo.append(lambda: self.cli.run("stop", "--name", self.name, "--purge"))

    def _network(self) -> None:
        forward = Path("/proc/sys/net/ipv4/ip_forward")
        before = forward.read_text()
        self._undo.append(lambda: forward.write_text(before))
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        self._undo.append(lambda: _run("ip", "link", "delete", BRIDGE, check=False))
        _run("ip", "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        _run("iptables", "-I", *FORWARD_RULE)
        self._undo.append(lambda: _run("iptables", "-D", *FORWARD_RULE, check=False))
        cni = self.folder / "cni"
        cni.mkdir(exist_ok=True)
        (cni / "10-kmup-root.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": CNI_NETWORK,
            "plugins": [
                {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_SUBNET, "gateway": GATEWAY}]],
                          "dataDir": str(self.folder / "cni-ipam")}},
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }))

    def _containerd(self) -> None:
        hosts = self.folder / "certs.d" / self.registry
        hosts.mkdir(parents=True, exist_ok=True)
        (hosts / "hosts.toml").write_text(
            f'server = "http://{self.registry}"\n\n[host."http://{self.registry}"]\n  capabilities = ["pull", "resolve"]\n'
        )
        conf = self.folder / "containerd.toml"
        conf.write_text(textwrap.dedent(f"""\
            version = 2
            root = "{self.folder / 'containerd-root'}"
            state = "{self.folder / 'containerd-state'}"
            [grpc]
              address = "{self.socket}"
            [ttrpc]
              address = "{self.socket}.ttrpc"
            [plugins."io.containerd.grpc.v1.cri"]
              sandbox_image = "{self.registry}/{PAUSE}"
              restrict_oom_score_adj = true
              netns_mounts_under_state_dir = true
              enable_selinux = false
              [plugins."io.containerd.grpc.v1.cri".cni]
                bin_dir = "/usr/lib/cni"
                conf_dir = "{self.folder / 'cni'}"
              [plugins."io.containerd.grpc.v1.cri".registry]
                config_path = "{self.folder / 'certs.d'}"
              [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
                runtime_type = "io.containerd.runc.v2"
                [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
                  Root = "{self.folder / 'runc'}"
            """))
        self._spawn("containerd", ["containerd", "--config", str(conf)])
        _wait("containerd", lambda: self.socket.exists(), log=self.folder / "containerd.log")

    @property
    def socket(self) -> Path:
        return self.folder / "containerd.sock"

    def _kubelet(self) -> None:
        master_pki = self.cli.home / self.name / "pki"
        authority = pki.PKI(master_pki)
        authority.issue(pki.Identity(f"nodes/{NODE}", f"system:node:{NODE}", ("system:nodes",)))
        authority.issue(pki.Identity(f"nodes/{NODE}-serving", NODE, client=False, server=True,
                                     dns_names=(NODE,), ip_addresses=(GATEWAY,)))
        endpoint = json.loads((self.cli.home / self.name / "state.json").read_text())["endpoint"]
        node_kubeconfig = self.folder / "kubelet.kubeconfig"
        kubeconfig.write(node_kubeconfig, kubeconfig.embedded(
            server=endpoint, ca=authority.cert_path("ca"), cert=authority.cert_path(f"nodes/{NODE}"),
            key=authority.key_path(f"nodes/{NODE}"), user=f"system:node:{NODE}", cluster="root",
        ))
        (self.folder / "resolv.conf").write_text("")  # pods get no DNS server to ask
        kubelet_config = self.folder / "kubelet.yaml"
        kubelet_config.write_text(yaml.safe_dump({
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(authority.cert_path("ca"))}},
            "authorization": {"mode": "Webhook"},
            "cgroupDriver": "cgroupfs",
            # These machines mount cgroup v1 (hybrid); 1.35+ refuses it by default.
            "failCgroupV1": False,
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            # Nothing can be pulled from the internet: images must never be collected.
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
            "makeIPTablesUtilChains": False,
            "podLogsDir": str(self.folder / "pod-logs"),
            "port": _free_port(), "readOnlyPort": 0, "healthzPort": 0,
            "tlsCertFile": str(authority.cert_path(f"nodes/{NODE}-serving")),
            "tlsPrivateKeyFile": str(authority.key_path(f"nodes/{NODE}-serving")),
            "resolvConf": str(self.folder / "resolv.conf"),
            "maxPods": 110,
            **self._kubelet_settings(),
        }))
        kubelet = binaries.tool("kubelet", resolve_settings(flags={}, environ={}), config.home_dir(), UI())
        self._spawn("kubelet", [
            str(kubelet), f"--config={kubelet_config}", f"--kubeconfig={node_kubeconfig}",
            f"--root-dir={self.folder / 'kubelet'}", f"--cert-dir={self.folder / 'kubelet-pki'}",
            f"--hostname-override={NODE}", f"--node-ip={GATEWAY}", "--v=2",
        ])

        def node_ready() -> bool:
            got = self.kubectl("get", "node", NODE, "-o", "json")
            if got.returncode != 0:
                return False
            conditions = json.loads(got.stdout)["status"].get("conditions", [])
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        _wait("the root node", node_ready, timeout=120, log=self.folder / "kubelet.log")
        # Pods need their namespace's default ServiceAccount before they can be made.
        _wait("the default ServiceAccount", lambda: self.kubectl("get", "sa", "default").returncode == 0)

    # Stop ------------------------------------------------------------------------

    def stop(self) -> None:
        """Everything start made, in reverse; then what the runtime left outside the folder."""
        # What a sibling fixture runs beside the node's own (its kube-proxy, its detector) goes first.
        for extra in [name for name in self.processes if name not in ("kubelet", "containerd", "registry")]:
            _stop(self.processes.pop(extra))
        kubelet = self.processes.pop("kubelet", None)
        if kubelet is not None:
            _stop(kubelet)
        if (containerd := self.processes.pop("containerd", None)) is not None:
            self._kill_containers()
            _stop(containerd)
        # Shims outlive containerd by design: ours are those serving our socket.
        for line in _run("pgrep", "-af", "containerd-shim", check=False).stdout.splitlines():
            pid, _, command = line.partition(" ")
            if str(self.socket) in command:
                os.kill(int(pid), signal.SIGKILL)
        if (registry := self.processes.pop("registry", None)) is not None:
            _stop(registry)
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()
        self._unmount()
        self._sweep_outside()
        shutil.rmtree(self.folder, ignore_errors=True)
        if self._lock_file is not None:
            RECORD.unlink(missing_ok=True)
            self._lock_file.close()  # type: ignore[attr-defined]  # releases the lock
            self._lock_file = None

    def _kill_containers(self) -> None:
        ctr = ["ctr", "--address", str(self.socket), "-n", "k8s.io"]
        tasks = _run(*ctr, "tasks", "list", "-q", check=False).stdout.split()
        for task in tasks:
            _run(*ctr, "tasks", "kill", "-s", "SIGKILL", task, check=False)
        deadline = time.monotonic() + 20
        while tasks and time.monotonic() < deadline:
            time.sleep(0.2)
            tasks = [t for t in tasks if _run(*ctr, "tasks", "delete", t, check=False).returncode != 0]

    def _unmount(self) -> None:
        """The kubelet's volumes, the sandboxes' shm and network namespaces: deepest first."""
        mounted = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
        for point in sorted((m for m in mounted if m.startswith(f"{self.folder}/") or m == str(self.folder)),
                            key=len, reverse=True):
            if _run("umount", point, check=False).returncode != 0:
                _run("umount", "-l", point, check=False)

    def _sweep_outside(self) -> None:
        before = getattr(self, "_outside_before", {})
        for path in sorted(_OUTSIDE, key=lambda p: len(p.parts), reverse=True):
            if path not in before or not path.is_dir():
                continue
            if before[path] is None:
                shutil.rmtree(path, ignore_errors=True)
                continue
            for entry in set(os.listdir(path)) - before[path]:
                if any(entry.startswith(prefix) for prefix in _OUTSIDE[path] if prefix is not None):
                    target = path / entry
                    shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()


def _undo_record(record: dict) -> None:
    """What a root cluster that was killed before its stop left on the machine (its
    processes ended with it): mounts under its folder, the bridge, the FORWARD rule."""
    folder = record["folder"]
    mounted = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounted if m == folder or m.startswith(f"{folder}/")), key=len, reverse=True):
        _run("umount", "-l", point, check=False)
    _run("ip", "link", "delete", BRIDGE, check=False)
    for netns in record.get("netns", []):  # a sibling fixture's network namespaces (their veths go with them)
        _run("ip", "netns", "delete", netns, check=False)
    for _ in range(10):
        if _run("iptables", "-D", *FORWARD_RULE, check=False).returncode != 0:
            break
    Path("/proc/sys/net/ipv4/ip_forward").write_text(record["ip_forward"])
    for made in sorted(record.get("absent", []), key=len):  # folders it made outside its own
        shutil.rmtree(made, ignore_errors=True)
    shutil.rmtree(folder, ignore_errors=True)
    RECORD.unlink(missing_ok=True)


def _stop(process: subprocess.Popen, timeout: float = 20) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
