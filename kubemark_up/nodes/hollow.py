"""The stock kubemark command lines, one builder per morph. Every engine that runs
stock kubemark (processes here, pods on a root cluster) takes its flags from here."""

from __future__ import annotations

from kubemark_up.config import Settings


def kubelet_command(settings: Settings, *, binary: str, name: str, kubeconfig: str, port: int) -> list[str]:
    argv = [
        binary,
        "--morph=kubelet",
        f"--name={name}",
        f"--kubeconfig={kubeconfig}",
        # Many hollow kubelets share a host: each needs its own port, and none the
        # read-only port. No containerd runs here, so images come from the fake service.
        f"--kubelet-port={port}",
        "--kubelet-read-only-port=0",
        "--use-host-image-service=false",
        f"--max-pods={settings.max_pods}",
    ]
    if settings.hollow_node_labels:
        argv.append(f"--node-labels={settings.hollow_node_labels}")
    if settings.register_with_taints:
        argv.append(f"--register-with-taints={settings.register_with_taints}")
    if settings.extended_resources:
        argv.append(f"--extended-resources={settings.extended_resources}")
    if settings.kube_api_content_type:
        argv.append(f"--kube-api-content-type={settings.kube_api_content_type}")
    return argv + [settings.kubelet_log_level, *settings.hollow_kubelet_extra_args]


def proxy_command(settings: Settings, *, binary: str, name: str, kubeconfig: str) -> list[str]:
    argv = [binary, "--morph=proxy", f"--name={name}", f"--kubeconfig={kubeconfig}"]
    if settings.kube_api_content_type:
        argv.append(f"--kube-api-content-type={settings.kube_api_content_type}")
    return argv + [settings.proxy_log_level, *settings.hollow_proxy_extra_args]
