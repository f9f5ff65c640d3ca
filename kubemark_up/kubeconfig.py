"""Kubeconfig files: the admin's (certificates embedded, so it can be copied anywhere)
and the components' (pointing at files in pki/, so a thousand of them stay small)."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

from kubemark_up.pki import write_secret


def build(
    *,
    server: str,
    ca_file: Path,
    cert_file: Path,
    key_file: Path,
    user: str,
    cluster: str = "kubemark",
    embed: bool = False,
) -> dict:
    if embed:
        cluster_entry = {"server": server, "certificate-authority-data": _b64(ca_file)}
        user_entry = {"client-certificate-data": _b64(cert_file), "client-key-data": _b64(key_file)}
    else:
        cluster_entry = {"server": server, "certificate-authority": str(ca_file)}
        user_entry = {"client-certificate": str(cert_file), "client-key": str(key_file)}
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": cluster_entry}],
        "users": [{"name": user, "user": user_entry}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user}}],
        "current-context": cluster,
        "preferences": {},
    }


def write(path: Path, config: dict) -> Path:
    """Kubeconfigs name or carry keys: 0600, like the keys themselves."""
    write_secret(path, yaml.safe_dump(config, sort_keys=False).encode())
    return path


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()
