"""The start-to-Ready benchmark's pure parts: which runs --run names (with another
build's binaries after @) and the table that labels them. The benchmark itself is
validated by running it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import start_to_ready


def _runs(*specs: str, **given: object) -> list[tuple[str, int, int, str | None]]:
    args = argparse.Namespace(run=list(specs), nodes=given.get("nodes"), engine=given.get("engine"),
                              fleet_processes=1)
    return start_to_ready._runs(args, argparse.ArgumentParser(prog="start_to_ready.py"))


def test_each_run_names_its_engine_nodes_processes_and_binaries(tmp_path: Path) -> None:
    old = tmp_path / "oldbin"
    old.mkdir()
    assert _runs("kubemark:100", "fleet:3000:2", f"fleet:1000@{old}") == [
        ("kubemark", 100, 1, None), ("fleet", 3000, 2, None), ("fleet", 1000, 1, str(old))]


@pytest.mark.parametrize(("spec", "message"), [
    ("fleet:10@/no/such/folder", "--run fleet:10@/no/such/folder: no such folder"),
    ("fleet", "expected ENGINE:NODES[:FLEET_PROCESSES][@BIN_DIR]"),
    ("stock:10", "expected ENGINE:NODES"),
    ("fleet:0", "expected ENGINE:NODES"),
    ("fleet:10:1:1", "expected ENGINE:NODES"),
])
def test_a_bad_run_is_refused_in_one_line(spec: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        _runs(spec)
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in error


def test_run_and_nodes_together_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _runs("fleet:10", nodes=[10])
    assert "give --run or --nodes/--engine, not both" in capsys.readouterr().err


def _result(engine: str, nodes: int, bin_dir: str) -> dict:
    return {"engine": engine, "nodes": nodes, "fleet_processes": 1, "bin_dir": bin_dir, "start_to_ready_seconds": 48.7,
            "per_hollow_node": {"millicpu": 0.117, "pss_mib": 0.478},
            "master": {"kube-apiserver": {"millicpu": 310.0, "pss_mib": 900.0}}, "held": {"held": True}}


def test_the_table_labels_a_run_of_other_binaries_and_only_that_one() -> None:
    table = start_to_ready._table([_result("fleet", 1000, "/cache/v1.36.3"), _result("fleet", 1000, "/tmp/oldbin")],
                                  "/cache/v1.36.3")
    rows = table.splitlines()[2:]
    assert rows[0].startswith("| fleet | 1,000 | 48.7 s | 0.12 mCPU | 0.48 MiB | 310 mCPU, 900 MiB | yes |")
    assert rows[1].startswith("| fleet (/tmp/oldbin) | 1,000 |")
