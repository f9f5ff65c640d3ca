"""flunder-churn and flunder-watch: configmap-churn and watch-storm against Flunders
(wardle.example.com/v1alpha1) of a real aggregated API server, so that the
aggregation layer's proxying is measured and not only the core API.

The server is k8s.io/sample-apiserver, built from its Go module at the master's
release (kubemark_up/gobuild/sampleapiserver, `binaries.tool`, for this machine's
architecture like the master's binaries). For a run it is started through the
master's Host, beside the master (on any provider's master host: its binary, when
that host is not this machine, and its files are put there), on 127.0.0.1 with a
serving certificate of a CA made for the run (the CA's key never leaves this
machine; the server's files are in a private folder of the run on that host,
removed after), storing in the master's etcd (the apiserver's etcd client
certificate), authenticating and authorizing by delegation to the master (the
front-proxy's request headers, TokenReview, SubjectAccessReview). It is registered
through an APIService (cluster-scoped: recorded, labelled and deleted like a CRD)
pointing at an ExternalName Service of the run's namespace (`localhost`, since no
kube-proxy serves the master's host), with the CA as its caBundle. The server
carries the cluster's process marker, so `kubemark-up stop` stops it when a run was
killed; otherwise, whatever ended the run, the Flunders the run still has are
deleted through it (only it can) and it is stopped, before the runner deletes the
run's namespace and the APIService. The next flunder run stops a killed run's
server first (with its folder), and deletes the Flunders it left in etcd once its
own server is up.
"""

from __future__ import annotations

import base64
import posixpath
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from kubemark_up import binaries
from kubemark_up.errors import RunError
from kubemark_up.hosts import Host, ProcessHandle
from kubemark_up.pki import PKI, Identity
from kubemark_up.run.model import RUN_LABEL, Result
from kubemark_up.run.workloads.base import Plan, RunContext, Workload
from kubemark_up.run.workloads.churn import Churn, _payload
from kubemark_up.run.workloads.storm import STORM_LABEL, WatchStorm
from kubemark_up.ui import UI

GROUP, VERSION, PLURAL, KIND = "wardle.example.com", "v1alpha1", "flunders", "Flunder"
API = f"/apis/{GROUP}/{VERSION}"
APISERVICE = f"{VERSION}.{GROUP}"
APISERVICES = "/apis/apiregistration.k8s.io/v1/apiservices"
SERVICE = "wardle-api"
READY_TIMEOUT = 120.0
STOP_TIMEOUT = 15.0
PAYLOAD = "kubemark-up.run/payload"
CERT_FLAG = "--tls-cert-file="


class SampleAPIServer:
    """The run's aggregated API server: started by prepare(), stopped by close()."""

    def __init__(self) -> None:
        self.host: Host | None = None  # the master's
        self.handle: ProcessHandle | None = None  # what start() started, for stop() to stop
        self.folder = ""  # its private folder there
        self.log = ""
        self.port = 0
        self.orphans = 0  # Flunders of earlier runs found in etcd, and deleted
        self.run: RunContext | None = None

    def start(self, run: RunContext) -> None:
        ctx = run.cluster
        if ctx is None:
            raise RunError("the flunder workloads start the sample-apiserver beside the master: they need its cluster")
        self.run = run
        site = ctx.provider.master(ctx)
        host = self.host = site.host
        binary = binaries.tool("sample-apiserver", ctx.settings, ctx.dir.home, UI())
        marker = f"{ctx.marker}#sample-apiserver"
        _clear(host, marker)
        # Beside the runs' records: the cluster's folder on that host holds run/ (data_dir) and runs/.
        runs = posixpath.join(posixpath.dirname(site.paths.data_dir), "runs")
        self.folder = posixpath.join(runs, f"{run.run_id}.sample-apiserver")
        host.mkdirs([self.folder], mode=0o700)
        namespace = run.namespace(0)
        ca = self._put_files(host, namespace, ctx.dir.kubeconfig)
        cert, key, kubeconfig = (posixpath.join(self.folder, f) for f in ("serving.crt", "serving.key", "kubeconfig"))
        program = str(binary)
        if not host.is_this_machine:
            program = posixpath.join(self.folder, "sample-apiserver")
            host.put(program, binary, mode=0o755)
        low, high = ctx.settings.port_bounds
        (self.port,) = host.free_ports(1, low=low, high=high, exclude=ctx.state.ports.values())
        cluster_pki = site.paths.pki_dir
        argv = [program, "--bind-address=127.0.0.1", f"--secure-port={self.port}",
                f"{CERT_FLAG}{cert}", f"--tls-private-key-file={key}",
                f"--etcd-servers=https://127.0.0.1:{ctx.state.ports['etcd_client']}",
                f"--etcd-cafile={posixpath.join(cluster_pki, 'etcd', 'ca.crt')}",
                f"--etcd-certfile={posixpath.join(cluster_pki, 'apiserver-etcd-client.crt')}",
                f"--etcd-keyfile={posixpath.join(cluster_pki, 'apiserver-etcd-client.key')}",
                f"--kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}", "--v=1"]
        self.log = posixpath.join(site.paths.log_dir, f"sample-apiserver.{run.run_id}.log")
        self.handle = host.spawn(argv, log=self.log, env={}, marker=marker)
        run.create(f"/api/v1/namespaces/{namespace}/services", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": SERVICE},
            "spec": {"type": "ExternalName", "externalName": "localhost",
                     "ports": [{"name": "https", "port": self.port, "protocol": "TCP"}]},
        })
        found = run.kube.request("GET", f"{APISERVICES}/{APISERVICE}", missing_ok=True)
        if found is not None:
            raise RunError(f"APIService {APISERVICE} already exists (another run's, or not kubemark-up's): delete it first")
        run.cluster_object(APISERVICES, {
            "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": APISERVICE},
            "spec": {"group": GROUP, "version": VERSION, "groupPriorityMinimum": 1000, "versionPriority": 15,
                     "service": {"namespace": namespace, "name": SERVICE, "port": self.port},
                     "caBundle": base64.b64encode(ca).decode()},
        })
        self._wait(run, host, self.handle)
        self._delete_orphans(run)

    def _put_files(self, host: Host, namespace: str, kubeconfig: Path) -> bytes:
        """The serving certificate and key, of a CA made here for the run (its key never
        leaves this machine), and the master's kubeconfig, into the server's folder on
        its host; returns the CA's certificate (PEM), the APIService's caBundle."""
        with tempfile.TemporaryDirectory(prefix="kubemark-up-wardle-") as here:
            pki = PKI(Path(here))
            ca = pki.ensure_ca("ca", "kubemark-up sample-apiserver")
            pki.issue(Identity(stem="serving", common_name=f"{SERVICE}.{namespace}.svc", client=False, server=True,
                               dns_names=(f"{SERVICE}.{namespace}.svc", "localhost"), ip_addresses=("127.0.0.1",),
                               ca="ca"))
            host.put(posixpath.join(self.folder, "serving.crt"), pki.cert_path("serving"), mode=0o644)
            host.put(posixpath.join(self.folder, "serving.key"), pki.key_path("serving"), mode=0o600)
        host.put(posixpath.join(self.folder, "kubeconfig"), kubeconfig, mode=0o600)
        return ca.public_bytes(serialization.Encoding.PEM)

    def _wait(self, run: RunContext, host: Host, handle: ProcessHandle) -> None:
        """Until the APIService is Available and Flunders can be listed through the master."""
        deadline = min(time.monotonic() + READY_TIMEOUT, run.deadline)
        problem = ""
        while time.monotonic() < deadline:
            if not host.running(handle):
                raise RunError(f"the sample-apiserver exited; log {self.log} on {host.name}:\n{host.tail(self.log, 10)}")
            service = run.kube.request("GET", f"{APISERVICES}/{APISERVICE}")
            conditions = {c["type"]: c for c in (service.get("status") or {}).get("conditions") or []}
            available = conditions.get("Available", {})
            if available.get("status") == "True":
                try:
                    run.kube.request("GET", f"{API}/{PLURAL}", query={"limit": 1})
                    return
                except RunError as exc:
                    problem = exc.message
            else:
                problem = f"APIService {APISERVICE}: {available.get('reason')}: {available.get('message')}"
            time.sleep(0.5)
        raise RunError(f"the sample-apiserver did not serve Flunders through the master in {READY_TIMEOUT:.0f}s "
                       f"({problem}); log {self.log} on {host.name}")

    def _delete_orphans(self, run: RunContext) -> None:
        """Flunders of earlier runs (a killed run's live objects stay in etcd): delete them."""
        listing = run.kube.request("GET", f"{API}/{PLURAL}", query={"labelSelector": RUN_LABEL})
        for item in listing["items"]:
            meta = item["metadata"]
            if (meta.get("labels") or {}).get(RUN_LABEL) != run.run_id:
                self.orphans += 1
                run.kube.request("DELETE", f"{API}/namespaces/{meta['namespace']}/{PLURAL}/{meta['name']}",
                                 missing_ok=True)

    def note(self, results: list[Result]) -> list[Result]:
        if self.orphans:
            results[0].notes.append(f"deleted {self.orphans} Flunder(s) an earlier run left in etcd")
        return results

    def stop(self) -> None:
        """Delete the run's Flunders (only this server can: gone with it, they would stay in
        etcd when their namespace goes), then stop it."""
        try:
            if (self.host is not None and self.handle is not None and self.run is not None
                    and self.host.running(self.handle)):
                self._delete_flunders(self.run)
        finally:
            self._stop()

    def _delete_flunders(self, run: RunContext) -> None:
        collection = f"{API}/namespaces/{run.namespace(0)}/{PLURAL}"
        query = {"labelSelector": f"{RUN_LABEL}={run.run_id}"}
        run.kube.request("DELETE", collection, query=query, missing_ok=True)
        deadline = time.monotonic() + 30
        while run.kube.request("GET", collection, query={**query, "limit": 1})["items"]:
            if time.monotonic() > deadline:
                raise RunError(f"the run's Flunders were not deleted in 30s ({collection})")
            time.sleep(0.2)

    def _stop(self) -> None:
        if self.host is None:
            return
        left = self.host.stop([self.handle], timeout=STOP_TIMEOUT) if self.handle is not None else []
        if self.folder:
            self.host.remove([self.folder])
        if left:  # the runner warns; `stop` tries again (the marker)
            raise RunError(f"the sample-apiserver (pid {left[0].pid} on {self.host.name}) would not stop")


def _clear(host: Host, marker: str) -> None:
    """A killed run's server goes first (`stop` would stop it, too), with its folder,
    named in its command line."""
    stale = host.find_marked(marker)
    folders = [posixpath.dirname(arg.removeprefix(CERT_FLAG)) for argv in host.cmdlines(stale).values()
               for arg in argv or [] if arg.startswith(CERT_FLAG)]
    host.stop(stale, timeout=STOP_TIMEOUT)
    host.remove(f for f in folders if f.endswith(".sample-apiserver"))


def flunder(name: str, labels: dict[str, str], payload: str) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
            "metadata": {"name": name, "labels": labels, "annotations": {PAYLOAD: payload}}, "spec": {}}


class WithSampleAPIServer(Workload):
    """A workload whose objects are Flunders: the run's sample-apiserver comes and goes with it."""

    server: SampleAPIServer

    def prepare(self, run: RunContext) -> None:
        self.server = SampleAPIServer()
        self.server.start(run)

    def close(self) -> None:
        if hasattr(self, "server"):
            self.server.stop()

    def results(self) -> list[Result]:
        found = super().results()
        return self.server.note(found) if hasattr(self, "server") else found

    def watched(self, run: RunContext) -> str | None:
        return f"{API}/{PLURAL}"

    def collection(self, run: RunContext) -> str:
        return f"{API}/namespaces/{run.namespace(0)}/{PLURAL}"


class FlunderChurn(WithSampleAPIServer, Churn):
    name = "flunder-churn"
    summary = "configmap-churn against Flunders of a real aggregated API server (sample-apiserver) beside the master"
    title = "Flunder churn (through the aggregation layer)"
    result_name = "flunder_churn"

    def extra_objects(self) -> int:
        return 2  # the Service and the APIService

    def body(self, run: RunContext, name: str, version: int) -> dict:
        return flunder(name, dict(run.labels), _payload(self.options.payload, version))

    def changed(self, obj: dict, version: int) -> dict:
        obj["metadata"].setdefault("annotations", {})[PAYLOAD] = _payload(self.options.payload, version)
        return obj


class FlunderWatch(WithSampleAPIServer, WatchStorm):
    name = "flunder-watch"
    summary = "watch-storm against Flunders of a real aggregated API server (sample-apiserver) beside the master"
    result_name = "flunder_watch"
    title = "Flunder watch storm (through the aggregation layer)"

    def plan(self, nodes: int) -> Plan:
        plan = super().plan(nodes)
        return Plan(objects=plan.objects + 2, pods=0, phases=plan.phases)

    def body(self, name: str) -> dict:
        return flunder(name, {STORM_LABEL: "1"}, "x" * self.options.payload)

    def patch(self, written: int) -> dict:
        return {"metadata": {"annotations": {"kubemark-up.run/write": str(written),
                                             PAYLOAD: f"{written}:" + "x" * self.options.payload}}}
