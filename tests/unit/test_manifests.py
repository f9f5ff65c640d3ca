"""master-manifests/: valid static pods, one command per component, every flag
once, extra flags last (so they win), values quoted safely."""

from __future__ import annotations

from kubemark_up import config, master

PORTS = dict(zip(master.PORT_NAMES, range(21000, 21006), strict=True))
PATHS = master.MasterPaths(
    pki_dir="/etc/km/pki", kubeconfig_dir="/etc/km/kubeconfigs", data_dir="/var/lib/km", bin_dir="/opt/km/bin",
    log_dir="/var/log/km",
)


def render(**settings):
    return {c.name: c for c in master.render(config.Settings(**settings), paths=PATHS, ports=PORTS, advertise_address="192.0.2.10")}


def test_static_pods():
    components = render()
    assert list(components) == list(master.ORDER)
    for name, component in components.items():
        pod = component.manifest
        assert (pod["apiVersion"], pod["kind"], pod["metadata"]["name"]) == ("v1", "Pod", name)
        assert pod["metadata"]["namespace"] == "kube-system" and pod["spec"]["hostNetwork"] is True
        container = pod["spec"]["containers"][0]
        assert container["command"][0] == name
        assert container["image"].startswith("registry.k8s.io/")
        flags = [arg.split("=", 1)[0] for arg in component.command[1:]]
        assert len(flags) == len(set(flags)), f"{name} repeats a flag"
        mounted = {m["mountPath"] for m in container.get("volumeMounts", [])}
        for arg in component.command[1:]:
            value = arg.split("=", 1)[-1]
            if value.startswith("/") and not arg.startswith("--authorization-always-allow-paths="):  # URL paths
                assert any(value.startswith(m) for m in mounted), f"{name}: {value} is not mounted"


def test_apiserver_is_tls_only_with_node_authorization():
    command = render()["kube-apiserver"].command
    assert "--authorization-mode=Node,RBAC" in command
    assert "--enable-admission-plugins=NodeRestriction" in command
    assert "--advertise-address=192.0.2.10" in command
    assert "--endpoint-reconciler-type=lease" in command
    loopback = master.render(config.Settings(), paths=PATHS, ports=PORTS, advertise_address="127.0.0.1")
    assert "--endpoint-reconciler-type=none" in loopback[1].command
    assert f"--etcd-servers=https://127.0.0.1:{PORTS['etcd_client']}" in command
    probe = render()["kube-apiserver"].startup_probe
    assert probe.url == f"https://127.0.0.1:{PORTS['apiserver']}/readyz"


def test_settings_reach_the_flags():
    components = render(
        nodes=1200, feature_gates="A=true", runtime_config="api/all=true", etcd_compaction_interval_sec=150,
        service_cluster_ip_range="10.96.0.0/12", allocate_node_cidrs=False, log_level="--v=4",
    )
    api = components["kube-apiserver"].command
    assert {"--max-requests-inflight=1500", "--max-mutating-requests-inflight=500", "--feature-gates=A=true",
            "--runtime-config=api/all=true", "--etcd-compaction-interval=150s",
            "--service-cluster-ip-range=10.96.0.0/12", "--v=4"} <= set(api)
    kcm = components["kube-controller-manager"].command
    assert "--allocate-node-cidrs=false" in kcm and "--feature-gates=A=true" in kcm
    assert "--cluster-cidr=10.64.0.0/13" in kcm


def test_extra_args_come_last_and_stay_one_argument_each():
    odd = "--audit-policy-file=/a b/policy: {x}.yaml"
    command = render(apiserver_extra_args=["--v=7", odd])["kube-apiserver"].command
    assert command[-2:] == ["--v=7", odd]
    assert render(etcd_extra_args=["--enable-pprof"])["etcd"].command[-1] == "--enable-pprof"


def test_the_watch_cache_can_be_turned_off_or_sized():
    assert not any(arg.startswith("--watch-cache") for arg in render()["kube-apiserver"].command)
    command = render(watch_cache=False, watch_cache_sizes="pods#1000,deployments.apps#50")["kube-apiserver"].command
    assert "--watch-cache=false" in command
    assert "--watch-cache-sizes=pods#1000,deployments.apps#50" in command


def test_the_controllers_serve_metrics_without_credentials_on_loopback_only():
    components = render()
    for name in ("kube-controller-manager", "kube-scheduler"):
        command = components[name].command
        assert "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics" in command
        assert "--bind-address=127.0.0.1" in command
    assert f"--listen-metrics-urls=http://127.0.0.1:{PORTS['etcd_metrics']}" in components["etcd"].command
    assert master.metrics_url("kube-scheduler", PORTS) == f"https://127.0.0.1:{PORTS['scheduler']}/metrics"
    assert master.metrics_url("etcd", PORTS) == f"http://127.0.0.1:{PORTS['etcd_metrics']}/metrics"



def test_events_get_an_etcd_of_their_own_where_there_is_an_events_disk():
    import dataclasses

    assert "etcd-events" not in render() and not any(
        a.startswith("--etcd-servers-overrides") for a in render()["kube-apiserver"].command)
    paths = dataclasses.replace(PATHS, events_data_dir="/mnt/events/km/etcd-events")
    ports = {**PORTS, **dict(zip(master.EVENTS_PORT_NAMES, range(21010, 21013), strict=True))}
    assert master.port_names(paths) == master.PORT_NAMES + master.EVENTS_PORT_NAMES
    components = {c.name: c for c in master.render(config.Settings(), paths=paths, ports=ports,
                                                   advertise_address="192.0.2.10")}
    assert list(components) == ["etcd", "etcd-events", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]
    events = components["etcd-events"]
    assert events.manifest["metadata"]["name"] == "etcd-events" and events.command[0] == "etcd"
    assert "--data-dir=/mnt/events/km/etcd-events" in events.command
    assert "--listen-client-urls=https://127.0.0.1:21010" in events.command
    assert "--initial-cluster=etcd-events0=https://127.0.0.1:21011" in events.command
    assert events.startup_probe.url == "http://127.0.0.1:21012/readyz"
    assert "--data-dir=/var/lib/km/etcd" in components["etcd"].command
    assert "--etcd-servers-overrides=/events#https://127.0.0.1:21010" in components["kube-apiserver"].command
    assert master.stop_wave(["/bin/sh", "start-master.sh", "etcd-events"]) == master.stop_wave(["etcd"]) == 2
    script = master.start_script(list(components.values()), paths, cluster="c")
    assert "  etcd-events)\n    exec /opt/km/bin/etcd" in script
