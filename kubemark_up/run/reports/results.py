"""Result folders: one JSON file per measurement, each carrying the run's metadata
(the cluster's shape, versions and settings, the run's options and rates), so that
any one file stands on its own; read back by compare and the HTML report (html.py,
which writes the folder's files and its report together: write_all)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from kubemark_up.errors import ConfigError
from kubemark_up.run.model import Result

FORMAT = 1
HTML_NAME = "report.html"


def write(folder: Path, meta: dict[str, Any], results: list[Result]) -> list[Path]:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot make the result folder {folder} ({exc.strerror})") from None
    written = []
    for result in results:
        document = {"kubemark_up_result": FORMAT, **meta, "result": result.as_dict()}
        written.append(_write(folder / f"{result.measurement}.json", json.dumps(document, indent=1, default=str)))
    return written


def _write(path: Path, text: str) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def write_text(path: Path, text: str) -> Path:
    return _write(path, text)


def read(folder: Path) -> dict[str, dict[str, Any]]:
    """measurement name -> its document, from a result folder."""
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a result folder (no such folder)")
    documents = {}
    for path in sorted(folder.glob("*.json")):
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path} is not a result file ({exc})") from None
        if not isinstance(document, dict) or document.get("kubemark_up_result") != FORMAT:
            continue
        documents[document["result"]["measurement"]] = document
    if not documents:
        raise ConfigError(f"{folder} holds no kubemark-up result files")
    return documents
