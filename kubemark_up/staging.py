"""Putting this machine's files onto a host: binaries (skipped when the host already
has the same build, by SHA-256), folder trees with their modes, single files. On
this machine, where the paths are the same, nothing is copied."""

from __future__ import annotations

import functools
import hashlib
import os
import posixpath
from collections.abc import Callable, Mapping
from pathlib import Path

from kubemark_up.errors import HostError
from kubemark_up.hosts import Host


@functools.lru_cache(maxsize=32)
def _local_sha256(path: str, size: int, mtime: float) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def local_sha256(path: Path) -> str:
    info = path.stat()
    return _local_sha256(str(path.resolve()), info.st_size, info.st_mtime)


def put_binaries(
    host: Host, binaries: Mapping[str, Path], bin_dir: str, *, upload: bool = True,
    announce: Callable[[str], None] = lambda _: None,
) -> list[str]:
    """Make bin_dir/<name> on host the same build as each local binary. Names that are
    links to one file here (the multi-call kube-master) become links to one copy there.
    A file already there with the same SHA-256 is kept. Without upload, bin_dir is the
    user's: it must already hold them, and nothing is written into it. Returns what was
    copied."""
    by_file: dict[str, list[str]] = {}
    for name, path in binaries.items():
        by_file.setdefault(os.path.realpath(path), []).append(name)
    if host.is_this_machine and all(
        os.path.realpath(posixpath.join(bin_dir, name)) == real for real, names in by_file.items() for name in names
    ):
        return []
    files = sorted(by_file)
    targets = [posixpath.join(bin_dir, os.path.basename(real)) for real in files]
    there = host.sha256(targets)
    copied = []
    for real, target, digest in zip(files, targets, there, strict=True):
        wanted = local_sha256(Path(real))
        if digest == wanted:
            continue
        if not upload:
            state = "is missing" if digest is None else "is another build"
            raise HostError(f"{target} on {host.name} {state} (want SHA-256 {wanted[:16]}...); "
                            "copy the binaries there or leave remote_bin_dir unset")
        announce(target)
        host.put(target, Path(real), mode=0o755)
        copied.append(target)
    for real, target in zip(files, targets, strict=True):
        for name in by_file[real]:
            link = posixpath.join(bin_dir, name)
            if link != target and upload:
                host.symlink(os.path.basename(real), link)
    return copied


def put_tree(host: Host, local: Path, remote: str, *, include: Callable[[Path], bool] = lambda _: True) -> int:
    """Copy the files below local that include() takes (by their path relative to
    local) to remote on host, folders 0700, files with their own modes; return how
    many files were written."""
    files = []
    for path in sorted(local.rglob("*")):
        relative = path.relative_to(local)
        if path.is_file() and include(relative):
            files.append((path, posixpath.join(remote, *relative.parts)))
    folders = sorted({posixpath.dirname(target) for _, target in files} | {remote})
    host.mkdirs(folders, mode=0o700)
    for path, target in files:
        host.put(target, path, mode=path.stat().st_mode & 0o777)
    return len(files)
