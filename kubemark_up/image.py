"""The hollow-node image, without Docker: an OCI image layout (image-spec v1.1) with
one layer holding the static kubemark, kubemark-fleet and node-problem-detector
binaries and the /etc/passwd and /etc/group a container runtime expects, and nothing
else (no base image: the binaries are static). Pushed over the OCI distribution API by crane
(go-containerregistry), built by the Go recipe.

The layer is written reproducibly (fixed owners, modes and times, sorted entries, no
gzip timestamp), so the same binaries always give the same digest: the image a
cluster records in its state is the image its pods run.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from kubemark_up import binaries
from kubemark_up.binaries import arch
from kubemark_up.config import Settings
from kubemark_up.errors import BinaryError, ConfigError
from kubemark_up.ui import UI

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"

# A process in the image runs as root, as the legacy hollow-node pod's containers do.
_PASSWD = b"root:x:0:0:root:/:/kubemark\nnobody:x:65534:65534:nobody:/:/kubemark\n"
_GROUP = b"root:x:0:\nnobody:x:65534:\n"


@dataclass(frozen=True)
class Image:
    layout: Path  # the OCI image layout folder
    digest: str  # sha256:... of the manifest: what a registry calls the image
    tag: str


def build(out: Path, *, kubemark: Path, npd: Path, tag: str, fleet: Path | None = None) -> Image:
    """Write the hollow-node image as an OCI image layout in out (replaced if there):
    stock kubemark and node-problem-detector, and kubemark-fleet for fleet pods."""
    executables = {"kubemark": kubemark, "node-problem-detector": npd}
    if fleet is not None:
        executables["kubemark-fleet"] = fleet
    return build_layout(out, executables, entrypoint="/kubemark", tag=tag)


def build_layout(out: Path, executables: dict[str, Path], *, entrypoint: str, tag: str) -> Image:
    """An image of static executables at the root of the file system, as an OCI image
    layout in out (replaced if there)."""
    layer, diff_id = _layer(executables)
    config = _json(
        {
            "architecture": arch(),
            "os": "linux",
            "config": {"Entrypoint": [entrypoint], "Env": ["PATH=/"], "User": "0", "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created_by": f"kubemark-up ({tag})"}],
        }
    )
    manifest = _json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": _descriptor(OCI_CONFIG, config),
            "layers": [_descriptor(OCI_LAYER, layer)],
        }
    )
    out.mkdir(parents=True, exist_ok=True)
    blobs = out / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for stale in blobs.iterdir():
        stale.unlink()
    for blob in (layer, config, manifest):
        (blobs / _sha256(blob)).write_bytes(blob)
    descriptor = {**_descriptor(OCI_MANIFEST, manifest), "annotations": {REF_NAME: tag}}
    (out / "index.json").write_bytes(_json({"schemaVersion": 2, "manifests": [descriptor]}))
    (out / "oci-layout").write_bytes(_json({"imageLayoutVersion": "1.0.0"}))
    return Image(layout=out, digest=f"sha256:{_sha256(manifest)}", tag=tag)


def read(layout: Path) -> Image:
    """The image an OCI layout written by build() holds."""
    try:
        index = json.loads((layout / "index.json").read_text())
        descriptor = index["manifests"][0]
        return Image(layout=layout, digest=descriptor["digest"], tag=descriptor["annotations"][REF_NAME])
    except (OSError, ValueError, KeyError, IndexError):
        raise ConfigError(f"{layout} holds no image written by `kubemark-up image build`") from None


def push(image: Image, reference: str, *, crane: Path, insecure: bool = False) -> str:
    """Push the image to reference (registry/repository:tag) and return what the
    registry calls it: reference's repository @ the digest."""
    argv = [str(crane), "push", *(["--insecure"] if insecure else []), str(image.layout), reference]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise BinaryError(f"crane could not push to {reference}: {last}")
    pushed = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    if not pushed.endswith(image.digest):
        raise BinaryError(f"the registry reports {pushed or 'nothing'} for {reference}, not {image.digest}")
    return pushed


@dataclass(frozen=True)
class Lookup:
    """What a registry said of a reference, read from this machine."""

    digest: str | None  # sha256:... when the registry gave it
    missing: bool = False  # the registry answered: no such tag or digest
    why: str = ""  # why there is no digest, in a few words


# What a registry answers for a tag or digest it does not hold (the distribution
# spec's error codes, or a bare 404 to crane's HEAD).
_MISSING = re.compile(r"MANIFEST_UNKNOWN|NAME_UNKNOWN|\b404 Not Found\b")


def lookup(reference: str, *, crane: Path, insecure: bool = False) -> Lookup:
    """The digest of reference in its registry. A registry that answers that it holds
    no such image makes a Lookup with missing set; one this machine cannot reach, or
    that refuses it (the root cluster may still pull: its own network, its own
    credentials), a Lookup without a digest, saying why."""
    argv = [str(crane), "digest", *(["--insecure"] if insecure else []), reference]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return Lookup(None, why="the registry did not answer in 30s")
    digest = result.stdout.strip()
    if result.returncode == 0 and digest.startswith("sha256:"):
        return Lookup(digest)
    return classify_failure(result.stderr)


def classify_failure(stderr: str) -> Lookup:
    """What crane's failed `digest` says: the image is not there, or why it could not tell."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    last = lines[-1].removeprefix("Error: ") if lines else "crane said nothing"
    if _MISSING.search(last):
        return Lookup(None, missing=True, why="not found")
    # "Get "https://...": dial tcp ...: connect: connection refused; Get "http://...": ..."
    # (crane tries https, then http): the first attempt's last cause is enough.
    cause = last.split("; ")[0].rsplit(": ", 1)[-1].strip()
    return Lookup(None, why=cause or last)


def repository(reference: str) -> str:
    """registry/repository of a reference, without its tag or digest."""
    name = reference.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def _layer(binaries: dict[str, Path]) -> tuple[bytes, str]:
    """The gzipped layer and the digest of its uncompressed tar (the diff_id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add_dir(tar, "etc")
        _add(tar, "etc/group", _GROUP, 0o644)
        _add(tar, "etc/passwd", _PASSWD, 0o644)
        for name in sorted(binaries):
            _add(tar, name, binaries[name].read_bytes(), 0o755)
        _add_dir(tar, "tmp", mode=0o1777)
    data = raw.getvalue()
    compressed = io.BytesIO()
    with gzip.GzipFile(fileobj=compressed, mode="wb", mtime=0, compresslevel=1) as stream:
        stream.write(data)
    return compressed.getvalue(), f"sha256:{_sha256(data)}"


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = len(data), mode, 0, 0, 0, "", ""
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, 0
    tar.addfile(info)


def _descriptor(media_type: str, blob: bytes) -> dict:
    return {"mediaType": media_type, "digest": f"sha256:{_sha256(blob)}", "size": len(blob)}


def _json(value: dict) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def default_layout(home: Path, version: str) -> Path:
    return home / "images" / f"kubemark-{version}"


def build_for(settings: Settings, home: Path, ui: UI, out: Path | None = None) -> Image:
    """The hollow-node image of these settings' binaries (resolved, or built)."""
    found = binaries.resolve(settings, home, ui)
    npd = binaries.tool("node-problem-detector", settings, home, ui)
    target = out or default_layout(home, settings.kubernetes_version)
    with ui.step(f"write the hollow-node image to {target}"):
        return build(target, kubemark=found["kubemark"].path, npd=npd, fleet=found["kubemark-fleet"].path,
                     tag=settings.kubernetes_version)
