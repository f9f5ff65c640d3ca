"""density: P pods per node through Deployments, created at a set rate (pods/s, as
clusterloader2's density test paces them), waited for Running, then deleted at the
same rate and waited gone."""

from __future__ import annotations

from pydantic import Field

from kubemark_up.run.workloads.base import (
    Plan,
    RunContext,
    Workload,
    WorkloadOptions,
    deployment,
    pod_template,
    pods_left,
    settled,
    sizes,
)


class DensityOptions(WorkloadOptions):
    # Pods per Deployment: small, so the pacing of Deployments paces the pods.
    deployment_size: int = Field(5, ge=1, le=1000)


class Density(Workload):
    name = "density"
    summary = "P pods per node through Deployments at a set rate, waited Running, then deleted"
    options_model = DensityOptions
    options: DensityOptions

    def _groups(self, nodes: int) -> list[int]:
        return sizes(nodes * self.options.pods_per_node, self.options.deployment_size)

    def watched(self, run: RunContext) -> str | None:
        return "/apis/apps/v1/deployments"

    def plan(self, nodes: int) -> Plan:
        groups = self._groups(nodes)
        # a namespace, and per Deployment its ReplicaSet and its pods
        return Plan(objects=1 + 2 * len(groups) + sum(groups), pods=sum(groups),
                    phases=["create", "wait Running", "delete", "wait deleted"])

    def run(self, run: RunContext) -> None:
        groups = self._groups(run.nodes)
        total = sum(groups)
        namespace = run.namespace(0)
        collection = f"/apis/apps/v1/namespaces/{namespace}/deployments"
        run.progress.target = total
        pacer = run.phase("create", rate=self.options.rate, items=total)
        assert pacer is not None
        for index, size in enumerate(groups):
            pacer.take(size)
            template = pod_template(run, f"density-{index}", self.options.image)
            run.create(collection, deployment(run, f"density-{index}", size, template))
        run.phase("wait Running")
        wanted = {(0, f"density-{index}"): size for index, size in enumerate(groups)}
        run.wait(f"{total} pods Running", lambda: settled(run, [0], wanted))
        pacer = run.phase("delete", rate=self.options.rate, items=total)
        assert pacer is not None
        for index, size in enumerate(groups):
            pacer.take(size)
            run.delete(f"{collection}/density-{index}")
        run.phase("wait deleted")
        run.wait("the pods to be deleted", lambda: not pods_left(run, namespace))
        run.finish()
