"""Result folders, the HTML report and compare, on results made here: a latency that
rose and a throughput that fell are worse, the other way round better, an SLO that
now fails is a regression; the report holds every plot, 'no data' where there is none."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubemark_up.errors import ConfigError
from kubemark_up.run.model import SLO, Metric, Result
from kubemark_up.run.reports import compare, html, results

META = {"cluster": {"name": "c", "nodes_ready": 3, "apiserver_version": "v1.36.3", "watch_cache": True},
        "run": {"id": "r1", "workload": "density", "options": {"pods_per_node": 2}}}


def _folder(tmp: Path, name: str, *, p99: float, throughput: float, slo_value: float) -> Path:
    startup = Result("pod_startup", "Pod startup latency", metrics={"create_to_running_p99": Metric(p99, "s")},
                     slos=[SLO("pod_startup", "pod startup p99", 5.0, slo_value)])
    scheduling = Result("scheduling_throughput", "Scheduling throughput",
                        metrics={"average": Metric(throughput, "pods/s", better="higher"),
                                 "pods_scheduled": Metric(6, "", better="none")})
    folder = tmp / name
    written = results.write(folder, META, [startup, scheduling])
    written.append(html.write(folder, META, [startup, scheduling]))
    assert sorted(p.name for p in written) == ["pod_startup.json", "report.html", "scheduling_throughput.json"]
    return folder


def test_result_files_stand_on_their_own(tmp_path):
    folder = _folder(tmp_path, "a", p99=1.0, throughput=10, slo_value=1.0)
    document = json.loads((folder / "pod_startup.json").read_text())
    assert document["cluster"]["nodes_ready"] == 3 and document["run"]["workload"] == "density"
    assert document["result"]["slos"][0] == {"name": "pod_startup", "description": "pod startup p99", "threshold": 5.0,
                                             "value": 1.0, "unit": "s", "ok": True}
    assert set(results.read(folder)) == {"pod_startup", "scheduling_throughput"}


def test_report_holds_every_plot_and_fetches_nothing(tmp_path):
    folder = _folder(tmp_path, "a", p99=1.0, throughput=10, slo_value=1.0)
    page = (folder / "report.html").read_text()
    for plot in html.PLOTS:
        assert f'data-plot="{plot}"' in page
    assert "<script" not in page and "src=" not in page and "href=" not in page
    assert html.write_from(folder).read_text() == page


def test_compare_directions_and_slos(tmp_path):
    old = _folder(tmp_path, "old", p99=1.0, throughput=10, slo_value=1.0)
    same = compare.compare(old, old, 0.10)
    assert same and not any(r.worse or r.better for r in same)
    worse = _folder(tmp_path, "worse", p99=1.2, throughput=8, slo_value=6.0)
    rows = {r.figure: r for r in compare.compare(old, worse, 0.10)}
    assert rows["create_to_running_p99"].worse and rows["create_to_running_p99"].change == pytest.approx(0.2)
    assert rows["average"].worse  # a throughput that fell
    assert rows["SLO pod_startup now fails"].worse
    assert not rows["pods_scheduled"].worse
    better = {r.figure: r for r in compare.compare(old, _folder(tmp_path, "b", p99=0.5, throughput=20, slo_value=0.5), 0.10)}
    assert better["create_to_running_p99"].better and better["average"].better
    assert not any(r.worse for r in better.values())
    within = {r.figure: r for r in compare.compare(old, _folder(tmp_path, "c", p99=1.05, throughput=9.5, slo_value=1), 0.10)}
    assert not any(r.worse for r in within.values())


def test_threshold_and_folders_are_checked():
    assert compare.threshold_of("10%") == pytest.approx(0.1) and compare.threshold_of("2.5") == pytest.approx(0.025)
    with pytest.raises(ConfigError, match="percentage"):
        compare.threshold_of("ten")
    with pytest.raises(ConfigError, match="not a result folder"):
        results.read(Path("/nonexistent/folder"))


def test_compare_cli_exit_codes(bare_cli, tmp_path):
    old = _folder(tmp_path, "old", p99=1.0, throughput=10, slo_value=1.0)
    worse = _folder(tmp_path, "worse", p99=2.0, throughput=10, slo_value=1.0)
    assert bare_cli.run("compare", str(old), str(old)).returncode == 0
    result = bare_cli.run("compare", str(old), str(worse), "--threshold", "50%")
    assert result.returncode == 3 and "+100.0%" in result.stdout
    assert "1 figure(s) worse by more than 50%: pod_startup create_to_running_p99" in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = bare_cli.run("compare", str(old), str(empty))
    assert bad.returncode == 2 and "holds no kubemark-up result files" in bad.stderr
