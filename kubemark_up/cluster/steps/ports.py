"""Step "ports": pick the master's ports (free ones, or those the provider fixes),
recorded under a lock before another cluster picks, with the endpoint they make."""

from __future__ import annotations

import ipaddress
from dataclasses import asdict

from kubemark_up import master
from kubemark_up.errors import ConfigError
from kubemark_up.providers.base import ClusterContext
from kubemark_up.state import MasterRecord
from kubemark_up.steps import Step


def run(ctx: ClusterContext) -> None:
    site = ctx.provider.master(ctx)
    wanted = [name for name in master.port_names(site.paths) if name not in ctx.state.ports]
    fixed = ctx.provider.fixed_ports(ctx)
    low, high = ctx.settings.port_bounds
    with ctx.dir.lock_ports():  # picked and recorded before another cluster picks
        claimed = ctx.dir.claimed_ports()
        taken = set(fixed.values()) | set(ctx.state.ports.values()) | claimed
        # A port the provider fixes (gce: 443 on a VM of its own) is not another cluster's.
        if fixed and ctx.settings.apiserver_port and fixed["apiserver"] in claimed:
            raise ConfigError(f"apiserver_port {fixed['apiserver']} belongs to another kubemark-up cluster")
        standard = [n for n in wanted if n in fixed and n != "apiserver"]
        busy = [n for n, used in zip(standard, site.host.ports_in_use([fixed[n] for n in standard]),
                                     strict=True) if used]
        if busy:
            raise ConfigError(
                f"port(s) {', '.join(str(fixed[n]) for n in busy)} ({', '.join(busy)}) already in use on "
                f"{site.host.name}: clusterloader2's fixed metrics ports (another cluster there?); "
                "standard_metrics_ports: false picks free ones"
            )
        free = site.host.free_ports(len([n for n in wanted if n not in fixed]), low=low, high=high, exclude=taken)
        for name in wanted:
            ctx.state.ports[name] = fixed[name] if name in fixed else free.pop(0)
        ctx.state.endpoint = f"https://{_url_host(site.addresses[0])}:{ctx.state.ports['apiserver']}"
        ctx.state.master = MasterRecord(
            host=site.host.name, addresses=site.addresses, bind_address=site.bind_address,
            paths={k: v for k, v in asdict(site.paths).items() if v is not None},
        )
        ctx.save()


def _url_host(address: str) -> str:
    try:
        return f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
    except ValueError:
        return address


STEP = Step("ports", "pick ports", run)
