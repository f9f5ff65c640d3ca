"""Step "stage": the master's binaries, PKI, manifests, start script and supervisor
on its host."""

from __future__ import annotations

import posixpath
from pathlib import Path

import yaml

from kubemark_up import master, staging, supervise
from kubemark_up.cluster.supervision import components
from kubemark_up.providers.base import ClusterContext
from kubemark_up.steps import Step


def _master_identity(relative: Path) -> bool:
    """What of pki/ the master reads: all but the hollow nodes' identities."""
    parts = relative.parts
    return parts[0] != "nodes" and parts[:2] != ("kubeconfigs", "nodes") and parts != ("kubeconfigs", "kube-proxy.kubeconfig")


def run(ctx: ClusterContext) -> None:
    site = ctx.provider.master(ctx)
    host, paths = site.host, site.paths
    rendered = components(ctx, site)
    with ctx.ui.step(f"put the master's files on {host.name}", long=not host.is_this_machine):
        host.mkdirs([paths.data_dir, paths.manifests_dir, paths.log_dir, paths.bin_dir, paths.pki_dir])
        if not host.is_this_machine:
            host.put(host.supervisor, Path(supervise.__file__).read_bytes(), mode=0o644)
        staging.put_tree(host, ctx.dir.pki, paths.pki_dir, include=_master_identity)
        for component in rendered.values():
            manifest = yaml.safe_dump(component.manifest, sort_keys=False).encode()
            # The rendered static-pod manifest, for the user to read: what this process is.
            host.put(posixpath.join(paths.manifests_dir, f"{component.name}.yaml"), manifest, mode=0o600)
        if ctx.settings.audit_nodes:
            host.put(posixpath.join(paths.data_dir, "audit-policy.yaml"), master.audit_policy(ctx.settings).encode(),
                     mode=0o600)
        script = master.start_script(list(rendered.values()), paths, cluster=ctx.info.name)
        host.put(paths.start_script, script.encode(), mode=0o700)
    wanted = {name: Path(ctx.state.binaries[name]) for name in master.ORDER}
    if host.is_this_machine:
        staging.put_binaries(host, wanted, paths.bin_dir, upload=site.upload_binaries)
        return
    verb = "put" if site.upload_binaries else "check"
    with ctx.ui.step(f"{verb} the master's binaries in {paths.bin_dir} on {host.name}", long=True):
        staging.put_binaries(host, wanted, paths.bin_dir, upload=site.upload_binaries)


STEP = Step("stage", "", run)
