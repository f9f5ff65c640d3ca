"""The stock kubemark command lines, one builder per morph. Every engine that runs
stock kubemark (processes on a host, pods on a root cluster) takes its flags from
here: the flags that follow from the settings, and, for processes, where each one's
identity and port are."""

from __future__ import annotations

from kubemark_up.config import Settings


def kubelet_args(settings: Settings) -> list[str]:
    """The hollow kubelet's flags that follow from the settings alone."""
    args = [f"--max-pods={settings.max_pods}"]
    if settings.hollow_node_labels:
        args.append(f"--node-labels={settings.hollow_node_labels}")
    if settings.register_with_taints:
        args.append(f"--register-with-taints={settings.register_with_taints}")
    if settings.extended_resources:
        args.append(f"--extended-resources={settings.extended_resources}")
    if settings.kube_api_content_type:
        args.append(f"--kube-api-content-type={settings.kube_api_content_type}")
    return [*args, settings.kubelet_log_level, *settings.hollow_kubelet_extra_args]


def proxy_args(settings: Settings) -> list[str]:
    """The hollow proxy's flags that follow from the settings alone."""
    args = [f"--kube-api-content-type={settings.kube_api_content_type}"] if settings.kube_api_content_type else []
    return [*args, settings.proxy_log_level, *settings.hollow_proxy_extra_args]


def kubelet_command(settings: Settings, *, binary: str, name: str, kubeconfig: str, port: int) -> list[str]:
    return [
        binary,
        "--morph=kubelet",
        f"--name={name}",
        f"--kubeconfig={kubeconfig}",
        # Many hollow kubelets share a host: each needs its own port, and none the
        # read-only port. No containerd runs here, so images come from the fake service.
        f"--kubelet-port={port}",
        "--kubelet-read-only-port=0",
        "--use-host-image-service=false",
        *kubelet_args(settings),
    ]


def proxy_command(settings: Settings, *, binary: str, name: str, kubeconfig: str) -> list[str]:
    return [binary, "--morph=proxy", f"--name={name}", f"--kubeconfig={kubeconfig}", *proxy_args(settings)]
