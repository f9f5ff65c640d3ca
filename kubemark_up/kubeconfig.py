"""Kubeconfig files: the admin's (certificates embedded, so it can be copied anywhere)
and the components' (naming certificate files by their paths on the host that reads
them, so a thousand of them stay small)."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

from kubemark_up.pki import write_secret


def embedded(*, server: str, ca: Path, cert: Path, key: Path, user: str, cluster: str) -> dict:
    """A kubeconfig carrying the CA, certificate and key read from these local files."""
    return _config(
        server=server, user=user, cluster=cluster,
        cluster_entry={"certificate-authority-data": _b64(ca)},
        user_entry={"client-certificate-data": _b64(cert), "client-key-data": _b64(key)},
    )


def by_path(*, server: str, ca: str, cert: str, key: str, user: str, cluster: str) -> dict:
    """A kubeconfig naming the CA, certificate and key by their paths where it is used."""
    return _config(
        server=server, user=user, cluster=cluster,
        cluster_entry={"certificate-authority": ca},
        user_entry={"client-certificate": cert, "client-key": key},
    )


def _config(*, server: str, user: str, cluster: str, cluster_entry: dict, user_entry: dict) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": server, **cluster_entry}}],
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
