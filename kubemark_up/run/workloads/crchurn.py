"""cr-churn: configmap-churn's open and closed loops against custom resources, of a
CustomResourceDefinition the workload installs for the run (ChurnObject,
churnobjects.kubemark-up.io/v1, namespaced, a schema with one string). The CRD is
cluster-scoped: it is recorded in the run's record before it is created, carries
the run's label, and the runner deletes it (and with it any object left) after
the run, on Ctrl-C or SIGTERM, or at the next run after a SIGKILL."""

from __future__ import annotations

import time

from kubemark_up.errors import RunError
from kubemark_up.run.workloads.base import RunContext
from kubemark_up.run.workloads.churn import Churn, _payload

GROUP, VERSION, PLURAL, KIND = "kubemark-up.io", "v1", "churnobjects", "ChurnObject"
CRD_NAME = f"{PLURAL}.{GROUP}"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
ESTABLISH_TIMEOUT = 60.0


def definition() -> dict:
    schema = {"type": "object", "properties": {"spec": {"type": "object", "properties": {"payload": {"type": "string"}}}}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": PLURAL, "singular": "churnobject", "kind": KIND, "listKind": f"{KIND}List"},
            "versions": [{"name": VERSION, "served": True, "storage": True, "schema": {"openAPIV3Schema": schema}}],
        },
    }


class CRChurn(Churn):
    name = "cr-churn"
    summary = "configmap-churn against custom resources of a CRD the run installs (and removes)"
    title = "Custom resource churn"
    result_name = "cr_churn"

    def extra_objects(self) -> int:
        return 1  # the CRD

    def prepare(self, run: RunContext) -> None:
        found = run.kube.request("GET", f"{CRDS}/{CRD_NAME}", missing_ok=True)
        if found is not None:
            raise RunError(f"CustomResourceDefinition {CRD_NAME} already exists (another run's, or not kubemark-up's): "
                           "delete it first")
        run.cluster_object(CRDS, definition())
        deadline = time.monotonic() + ESTABLISH_TIMEOUT
        while True:
            crd = run.kube.request("GET", f"{CRDS}/{CRD_NAME}")
            conditions = {c["type"]: c["status"] for c in (crd.get("status") or {}).get("conditions") or []}
            if conditions.get("Established") == "True":
                # Established, and its objects served (the handler follows the condition closely).
                try:
                    run.kube.request("GET", self.watched(run) or "", query={"limit": 1})
                    return
                except RunError:
                    pass
            if time.monotonic() > deadline:
                raise RunError(f"CustomResourceDefinition {CRD_NAME} was not established in {ESTABLISH_TIMEOUT:.0f}s")
            time.sleep(0.2)

    def collection(self, run: RunContext) -> str:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{run.namespace(0)}/{PLURAL}"

    def watched(self, run: RunContext) -> str | None:
        return f"/apis/{GROUP}/{VERSION}/{PLURAL}"

    def body(self, run: RunContext, name: str, version: int) -> dict:
        return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
                "metadata": {"name": name, "labels": dict(run.labels)},
                "spec": {"payload": _payload(self.options.payload, version)}}

    def changed(self, obj: dict, version: int) -> dict:
        obj["spec"] = {"payload": _payload(self.options.payload, version)}
        return obj
