"""Step "pki": the certificates of the master and of every hollow node, and the
kubeconfigs that name them."""

from __future__ import annotations

from pathlib import Path

from kubemark_up import kubeconfig, pki
from kubemark_up.cluster.steps.nodes import node_names
from kubemark_up.providers.base import ClusterContext
from kubemark_up.steps import Step


def run(ctx: ClusterContext) -> None:
    site = ctx.provider.master(ctx)
    authority = pki.PKI(ctx.dir.pki, ctx.settings.key_algorithm)
    pki.ensure_master_pki(
        authority, addresses=site.addresses, service_ip=ctx.settings.first_service_ip,
        dns_domain=ctx.settings.dns_domain,
    )
    names = node_names(ctx.settings)
    pki.ensure_node_pki(authority, names)
    server = ctx.state.endpoint or ""
    # The admin's carries its certificates; the others name files where they are read.
    kubeconfig.write(ctx.dir.kubeconfig, kubeconfig.embedded(
        server=server, ca=authority.cert_path("ca"), cert=authority.cert_path("admin"),
        key=authority.key_path("admin"), user="kubernetes-admin", cluster=ctx.info.name,
    ))
    there = site.paths.pki_dir

    def write(path: Path, stem: str, user: str) -> None:
        kubeconfig.write(path, kubeconfig.by_path(
            server=server, ca=f"{there}/ca.crt", cert=f"{there}/{stem}.crt", key=f"{there}/{stem}.key",
            user=user, cluster=ctx.info.name,
        ))

    write(ctx.dir.component_kubeconfig("controller-manager"), "controller-manager", "system:kube-controller-manager")
    write(ctx.dir.component_kubeconfig("scheduler"), "scheduler", "system:kube-scheduler")
    write(ctx.dir.component_kubeconfig("kube-proxy"), "kube-proxy", "system:kube-proxy")
    for name in names:
        write(ctx.dir.node_kubeconfig(name), f"nodes/{name}", f"system:node:{name}")


STEP = Step("pki", "write certificates and kubeconfigs", run)
