"""Finding the Kubernetes binaries: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kubemark (the stock hollow node) and kubemark-fleet (the fleet node
engine).

Resolution order, per binary:
  1. --bin-dir / KUBEMARK_UP_BIN_DIR: everything must be there;
  2. the cache, $KUBEMARK_UP_HOME/bin/<kubernetes version>/;
  3. the official release downloads, checked against their published SHA-256
     (kubemark is not published as a binary, so it is never downloaded);
  4. a build from the Go modules, when `go` is on PATH: the recipe in kubemark_up/gobuild
     (its tools/ and sampleapiserver/ modules among it) and the fleet's own module,
     kubemark_up/fleet.
What 3 and 4 produce lands in the cache. The built master is one executable,
kube-master, that the four master names link to.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from kubemark_up.config import Settings
from kubemark_up.errors import BinaryError
from kubemark_up.ui import UI

MASTER = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
NAMES = MASTER + ("kubemark", "kubemark-fleet")
# Built on demand only, by the commands that need them: crane pushes the hollow-node
# image (`kubemark-up image push`), node-problem-detector goes into that image; the
# kubelet and kube-proxy run a real node (the tests' root cluster, the fidelity reference).
TOOLS = ("crane", "node-problem-detector", "kubelet", "kube-proxy", "sample-apiserver")
NPD_VERSION = "v1.34.0"  # as kubemark_up/gobuild/tools/go.mod requires it

PACKAGE = Path(__file__).parent
GO_RECIPE = PACKAGE / "gobuild"
_DOWNLOAD_TIMEOUT = 60

# The fleet's sources, its tests aside: a change to a test leaves the built program as it is.
FLEET_SOURCES = tuple(sorted(f"fleet/{p.name}" for p in (PACKAGE / "fleet").glob("*.go") if not p.name.endswith("_test.go")))


@dataclass(frozen=True)
class Output:
    """One executable built from Go: where its module is, what `go build` builds,
    and the files whose content it depends on (paths under kubemark_up/)."""

    name: str
    module: str  # folder under kubemark_up/ holding its go.mod
    package: str
    files: tuple[str, ...]
    ldflags: str | None = None  # None: the Kubernetes version stamps
    # Minutes of a build with cold Go caches on a 2-core machine (measured there), for
    # the progress line; outputs of one module share most of the work.
    cold_minutes: int = 2


OUTPUTS = {
    output.name: output
    for output in (
        Output("kube-master", "gobuild", ".", ("gobuild/go.mod", "gobuild/go.sum", "gobuild/main.go"), cold_minutes=11),
        Output("kubemark", "gobuild", "k8s.io/kubernetes/cmd/kubemark", ("gobuild/go.mod", "gobuild/go.sum")),
        # The fleet node engine: many hollow nodes in one process, a module of its own.
        Output("kubemark-fleet", "fleet", ".", ("fleet/go.mod", "fleet/go.sum", *FLEET_SOURCES)),
        Output("kubelet", "gobuild", "k8s.io/kubernetes/cmd/kubelet", ("gobuild/go.mod", "gobuild/go.sum")),
        Output("kube-proxy", "gobuild", "k8s.io/kubernetes/cmd/kube-proxy", ("gobuild/go.mod", "gobuild/go.sum")),
        Output("crane", "gobuild/tools", "github.com/google/go-containerregistry/cmd/crane",
               ("gobuild/tools/go.mod", "gobuild/tools/go.sum"), ldflags="-s -w"),
        Output("node-problem-detector", "gobuild/tools", "k8s.io/node-problem-detector/cmd/nodeproblemdetector",
               ("gobuild/tools/go.mod", "gobuild/tools/go.sum"),
               ldflags=f"-s -w -X k8s.io/node-problem-detector/pkg/version.version={NPD_VERSION}", cold_minutes=4),
        # The aggregated API server of `run flunder-churn` and `flunder-watch`, a module of its own.
        Output("sample-apiserver", "gobuild/sampleapiserver", "k8s.io/sample-apiserver",
               ("gobuild/sampleapiserver/go.mod", "gobuild/sampleapiserver/go.sum"), ldflags="-s -w", cold_minutes=4),
    )
}


def built_by(name: str) -> Output:
    """The Go build output a binary comes from (the four master names share kube-master)."""
    return OUTPUTS["kube-master" if name in MASTER else name]


@dataclass(frozen=True)
class Binary:
    name: str
    path: Path
    source: str  # bin-dir | cache | download | build


def arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)


def pinned_version() -> str:
    """The Kubernetes release the Go recipe builds (from gobuild/go.mod)."""
    match = re.search(r"^\s*k8s\.io/kubernetes (v\S+)", (GO_RECIPE / "go.mod").read_text(), re.M)
    assert match, "gobuild/go.mod does not require k8s.io/kubernetes"
    return match[1]


def recipe_hash(output: str = "kube-master") -> str:
    """Changes whenever that output's part of the Go recipe does, so a stale build in
    the cache is rebuilt (and only that one)."""
    spec = OUTPUTS[output]
    digest = hashlib.sha256(spec.package.encode())
    for name in spec.files:
        digest.update((PACKAGE / name).read_bytes())
    digest.update((spec.ldflags or _ldflags(pinned_version())).encode())
    return digest.hexdigest()[:16]


def cache_dir(home: Path, version: str) -> Path:
    return home / "bin" / version


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


class _Cache:
    """The cache folder and its manifest.json: where each binary came from."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.manifest_path = folder / "manifest.json"
        try:
            self.manifest = json.loads(self.manifest_path.read_text())
        except (OSError, ValueError):
            self.manifest = {}

    def valid(self, name: str, settings: Settings) -> bool:
        entry = self.manifest.get(name)
        if not entry or not _executable(self.folder / name):
            return False
        if entry.get("source") == "build":
            return entry.get("recipe") == recipe_hash(built_by(name).name)
        # The folder is per Kubernetes release; a downloaded etcd must also be the one asked for.
        return name != "etcd" or entry.get("version") == settings.etcd_version

    def record(self, name: str, source: str, settings: Settings) -> None:
        entry = {"source": source}
        if source == "build":
            entry["recipe"] = recipe_hash(built_by(name).name)
        elif name == "etcd":
            entry["version"] = settings.etcd_version
        self.manifest[name] = entry
        tmp = self.manifest_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.manifest, indent=1, sort_keys=True))
        os.replace(tmp, self.manifest_path)


def cached(settings: Settings, home: Path) -> bool:
    """Whether resolve() needs no download or build: --bin-dir, or a valid cache."""
    if settings.bin_dir is not None:
        return True
    cache = _Cache(cache_dir(home, settings.kubernetes_version))
    return all(cache.valid(name, settings) for name in NAMES)


def resolve(
    settings: Settings, home: Path, ui: UI, *, sources: list[str] | None = None, force: bool = False
) -> dict[str, Binary]:
    """Every binary in NAMES, found or fetched or built, or a BinaryError saying how to get it.
    Sources are tried in their order; one that fails hands over to the next."""
    if settings.bin_dir is not None:
        return _from_bin_dir(settings.bin_dir)
    sources = list(settings.binary_sources if sources is None else sources)
    cache = _Cache(cache_dir(home, settings.kubernetes_version))
    found = {} if force else {
        name: Binary(name, cache.folder / name, "cache") for name in NAMES if cache.valid(name, settings)
    }
    for position, source in enumerate(sources):
        missing = [name for name in NAMES if name not in found]
        if not missing:
            break
        cache.folder.mkdir(parents=True, exist_ok=True)
        try:
            if source == "download":
                for name in [n for n in missing if n in MASTER]:  # kubemark is not published
                    with ui.step(f"download {name} {_version_of(name, settings)}", long=True):
                        _download(name, settings, cache.folder)
                    cache.record(name, "download", settings)
                    found[name] = Binary(name, cache.folder / name, "download")
            elif source == "build":
                _build(missing, settings, cache, ui)
                found.update({name: Binary(name, cache.folder / name, "build") for name in missing})
        except BinaryError as exc:
            if position == len(sources) - 1:
                raise
            ui.warn(f"{exc.message}; trying {sources[position + 1]}")
    missing = [name for name in NAMES if name not in found]
    if missing:
        raise BinaryError(
            f"missing {', '.join(missing)} for Kubernetes {settings.kubernetes_version}: "
            "run `kubemark-up binaries --source build` (needs Go), or pass --bin-dir DIR holding them"
        )
    return found


def _from_bin_dir(folder: Path) -> dict[str, Binary]:
    folder = folder.expanduser().absolute()
    if not folder.is_dir():
        raise BinaryError(f"--bin-dir {folder} is not a folder")
    missing = [name for name in NAMES if not _executable(folder / name)]
    if missing:
        raise BinaryError(
            f"--bin-dir {folder} lacks {', '.join(missing)} (it needs {', '.join(NAMES)}; "
            "`kubemark-up binaries --source build` builds them)"
        )
    return {name: Binary(name, folder / name, "bin-dir") for name in NAMES}


# Downloads --------------------------------------------------------------------


def _version_of(name: str, settings: Settings) -> str:
    return settings.etcd_version if name == "etcd" else settings.kubernetes_version


def _fetch(url: str, into: Path) -> str:
    """Stream url into a file; return its SHA-256."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT) as response, into.open("wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise BinaryError(f"could not download {url}: {reason}") from None
    return digest.hexdigest()


def _fetch_text(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT) as response:
            return response.read(1 << 20).decode()
    except (urllib.error.URLError, OSError, TimeoutError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "reason", exc)
        raise BinaryError(f"could not download {url}: {reason}") from None


def _download(name: str, settings: Settings, folder: Path) -> None:
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download.") as tmp:
        if name == "etcd":
            version = settings.etcd_version
            archive = f"etcd-{version}-linux-{arch()}.tar.gz"
            base = f"{settings.etcd_release_url.rstrip('/')}/{version}"
            sums = _fetch_text(f"{base}/SHA256SUMS")
            expected = next((line.split()[0] for line in sums.splitlines() if line.endswith(archive)), None)
            if expected is None:
                raise BinaryError(f"{base}/SHA256SUMS lists no {archive}")
            got = _fetch(f"{base}/{archive}", Path(tmp) / archive)
            _check(f"{base}/{archive}", got, expected)
            member = f"etcd-{version}-linux-{arch()}/etcd"
            with tarfile.open(Path(tmp) / archive) as tar:
                try:
                    source = tar.extractfile(member)
                except KeyError:
                    source = None
                if source is None:
                    raise BinaryError(f"{archive} holds no {member}")
                (Path(tmp) / name).write_bytes(source.read())
        else:
            url = f"{settings.release_url.rstrip('/')}/{settings.kubernetes_version}/bin/linux/{arch()}/{name}"
            expected = _fetch_text(url + ".sha256").split()[0]
            got = _fetch(url, Path(tmp) / name)
            _check(url, got, expected)
        os.chmod(Path(tmp) / name, 0o755)
        os.replace(Path(tmp) / name, folder / name)


def _check(url: str, got: str, expected: str) -> None:
    if got.lower() != expected.strip().lower():
        raise BinaryError(f"checksum mismatch for {url}: got sha256 {got}, published {expected.strip()}")


# Building ---------------------------------------------------------------------


def _ldflags(version: str) -> str:
    """Stamp the release into the binaries: built from modules they would otherwise report
    v0.0.0-master+$Format:%H$, and hollow nodes would register with that kubelet version."""
    major, minor = version.lstrip("v").split(".")[:2]
    stamps = {
        "k8s.io/component-base/version.gitVersion": version,
        "k8s.io/component-base/version.gitMajor": major,
        "k8s.io/component-base/version.gitMinor": minor,
        "k8s.io/component-base/version.gitTreeState": "clean",
        "k8s.io/client-go/pkg/version.gitVersion": version,
        "k8s.io/client-go/pkg/version.gitMajor": major,
        "k8s.io/client-go/pkg/version.gitMinor": minor,
    }
    return "-s -w " + " ".join(f"-X {key}={value}" for key, value in stamps.items())


def build_commands(out: Path, version: str) -> dict[str, list[str]]:
    """The go build command lines, by output name (the recipe, in one place); each runs
    in its output's module folder."""
    return {
        name: ["go", "build", "-trimpath", "-ldflags", spec.ldflags or _ldflags(version), "-o", str(out / name),
               spec.package]
        for name, spec in OUTPUTS.items()
    }


def _build(names: list[str], settings: Settings, cache: _Cache, ui: UI) -> None:
    pinned = pinned_version()
    if settings.kubernetes_version != pinned:
        raise BinaryError(
            f"the Go recipe builds Kubernetes {pinned}, not {settings.kubernetes_version}: "
            f"use --bin-dir, downloads, or kubernetes_version {pinned}"
        )
    go = shutil.which("go")
    if go is None:
        raise BinaryError(
            f"{', '.join(names)} must be built, and `go` is not on PATH: install Go >= 1.26 "
            "or pass --bin-dir DIR holding the binaries"
        )
    env = dict(os.environ, GOTOOLCHAIN="local", CGO_ENABLED="0", GOFLAGS="-mod=readonly")
    log = cache.folder / "build.log"
    outputs = list(dict.fromkeys(built_by(name).name for name in names))
    commands = build_commands(cache.folder, pinned)
    for output in outputs:
        argv = commands[output]
        what = output if OUTPUTS[output].ldflags else f"{output} {pinned}"
        with ui.step(f"build {what} with {go} (cold: about {OUTPUTS[output].cold_minutes} minutes; log: {log})", long=True):
            with log.open("ab") as handle:
                handle.write(f"$ {' '.join(argv)}\n".encode())
                handle.flush()
                result = subprocess.run(argv, cwd=PACKAGE / OUTPUTS[output].module, env=env, stdout=handle,
                                        stderr=subprocess.STDOUT)
            if result.returncode != 0:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                raise BinaryError(f"go build of {output} failed (exit {result.returncode}); log: {log}", detail=tail)
    for name in names:
        if name in MASTER:
            link = cache.folder / name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to("kube-master")
        cache.record(name, "build", settings)


def tool(name: str, settings: Settings, home: Path, ui: UI) -> Path:
    """One of TOOLS: from --bin-dir when it holds it, else the cache, built from the
    recipe if it is not there (or stale)."""
    if settings.bin_dir is not None and _executable(settings.bin_dir.expanduser() / name):
        return settings.bin_dir.expanduser().absolute() / name
    cache = _Cache(cache_dir(home, settings.kubernetes_version))
    if not cache.valid(name, settings):
        cache.folder.mkdir(parents=True, exist_ok=True)
        _build([name], settings, cache, ui)
    return cache.folder / name


def version_of(binary: Binary) -> str:
    """What the binary says its version is (first line of --version)."""
    try:
        result = subprocess.run(
            [str(binary.path), "--version"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    lines = (result.stdout or result.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"
