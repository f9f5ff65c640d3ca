"""`kubemark-up run` on the shared local cluster: a density run really makes and
removes its objects, its results count what it made and come from real data, an
impossible SLO exits 3, Ctrl-C in the middle deletes what it made, compare flags
a regression, and the HTML report renders in headless Chromium with every plot."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.support.cli import CLUSTER_NODES, RunningCluster, assert_one_line_error

PODS_PER_NODE = 2
RUN_LABEL = "kubemark-up.run"


def _run_namespaces(cluster: RunningCluster) -> list[dict]:
    listing = cluster.kubectl("get", "namespaces", "-l", RUN_LABEL, "-o", "json")
    assert listing.returncode == 0, listing.stderr
    return json.loads(listing.stdout)["items"]


def _run_pods(cluster: RunningCluster) -> list[dict]:
    listing = cluster.kubectl("get", "pods", "-A", "-l", RUN_LABEL, "-o", "json")
    assert listing.returncode == 0, listing.stderr
    return json.loads(listing.stdout)["items"]


@pytest.fixture(scope="module")
def density_run(local_cluster: RunningCluster, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("density") / "result"
    result = local_cluster.cli.run("run", "density", "--name", local_cluster.name, "--pods-per-node",
                                   str(PODS_PER_NODE), "--interval", "2", "--out", str(out), timeout=600)
    return result, out


def _posts(keys: list[dict], resource: str) -> int:
    return int(sum(k["count"] for k in keys if k["verb"] == "POST" and k["resource"] == resource and not k["subresource"]))


def _doc(out: Path, name: str) -> dict:
    return json.loads((out / f"{name}.json").read_text())


def test_density_run_measures_what_it_made_and_removes_it(local_cluster, density_run):
    result, out = density_run
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    pods_made = CLUSTER_NODES * PODS_PER_NODE
    startup = _doc(out, "pod_startup")
    # The cluster's shape, versions and settings travel with each result.
    assert startup["cluster"]["nodes_ready"] == CLUSTER_NODES
    assert startup["cluster"]["apiserver_version"] == "v1.36.3"
    assert startup["run"]["workload"] == "density" and startup["run"]["options"]["pods_per_node"] == PODS_PER_NODE
    pods = startup["result"]["data"]["pods"]
    # One entry per pod the run made: distinct pods, each bound to a hollow node, each seen running and deleted.
    assert len(pods) == pods_made == startup["result"]["metrics"]["pods"]["value"]
    assert len({p["uid"] for p in pods}) == pods_made
    assert {p["node"] for p in pods} <= {f"hollow-node-{i}" for i in range(CLUSTER_NODES)}
    assert all(p["running"] and p["deleted"] and p["created"] <= p["scheduled"] <= p["running"] for p in pods)
    # Latencies from the watch agree with the apiserver's own (whole-second) timestamps.
    assert all(p["created_api"] - 1 <= p["created"] <= p["created_api"] + 5 for p in pods)
    # Nearest rank: the p99 of 6 pods is the slowest of them.
    p99 = startup["result"]["metrics"]["create_to_running_p99"]["value"]
    assert 0 < p99 == max(p["running"] - p["created"] for p in pods)
    # The Deployments were really made: the apiserver counted the run's POSTs.
    keys = _doc(out, "api_latency")["result"]["data"]["keys"]
    assert _posts(keys, "deployments") == -(-pods_made // 5)
    # Every pod the apiserver was asked to create has its entry.
    assert _posts(keys, "pods") == pods_made
    assert all(k["p99"] is None or k["p99"] > 0 for k in keys)
    scheduling = _doc(out, "scheduling_throughput")["result"]
    assert scheduling["metrics"]["pods_scheduled"]["value"] == pods_made
    # The scheduler's own histograms, read on the master's host: every pod of the run bound.
    scheduler = _doc(out, "scheduler_latency")["result"]
    assert not scheduler["notes"], scheduler["notes"]
    assert scheduler["metrics"]["pods_scheduled"]["value"] >= pods_made
    assert scheduler["metrics"]["attempts_scheduled"]["value"] >= pods_made
    assert 0 < scheduler["metrics"]["e2e_p50"]["value"] <= scheduler["metrics"]["e2e_p99"]["value"]
    assert scheduler["metrics"]["attempt_p99"]["value"] > 0 and scheduler["metrics"]["Bind_p99"]["value"] > 0
    assert startup["partial"] is False and startup["run"]["ended"] == "completed"
    resources = _doc(out, "resources")["result"]
    assert {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} <= set(resources["data"]["cpu_seconds"])
    assert resources["metrics"]["kube-apiserver_rss_max"]["value"] > 10
    assert startup["run"]["requested_rate"] == 10 and startup["run"]["achieved_rate"] > 0
    # Nothing of the run is left, and its record says so.
    assert _run_namespaces(local_cluster) == [] and _run_pods(local_cluster) == []
    record = json.loads((local_cluster.dir / "runs" / f"{startup['run']['id']}.json").read_text())
    assert record["status"] == "cleaned" and len(record["namespaces"]) == 1
    assert "pod startup p99" in result.stdout and "pass" in result.stdout


def test_an_impossible_slo_exits_3(local_cluster):
    result = local_cluster.cli.run("run", "density", "--name", local_cluster.name, "--pods-per-node", "1",
                                   "--slo", "pod_startup=0.000001", "--measure", "pod_startup", timeout=300)
    assert_one_line_error(result, 3, "SLO violated: pod_startup")
    assert "FAIL" in result.stdout
    assert _run_namespaces(local_cluster) == []


def test_ctrl_c_in_the_middle_deletes_what_the_run_made(local_cluster, tmp_path):
    # 30 pods at 2 pods/s: about 15 s of creating, interrupted after the first few.
    out = tmp_path / "partial"
    process = local_cluster.cli.popen("run", "density", "--name", local_cluster.name, "--pods-per-node", "10",
                                      "--rate", "2", "--measure", "pod_startup", "--measure", "scheduler_latency",
                                      "--out", str(out))
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(_run_pods(local_cluster)) < 5:
            assert process.poll() is None, process.communicate()
            time.sleep(0.5)
        assert len(_run_pods(local_cluster)) >= 5
        assert len(_run_namespaces(local_cluster)) == 1
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert _run_namespaces(local_cluster) == [] and _run_pods(local_cluster) == []
    records = [json.loads(p.read_text()) for p in (local_cluster.dir / "runs").glob("*.json")]
    assert records and all(r["status"] == "cleaned" for r in records)
    # What was measured until the interruption is in --out, marked partial.
    assert "partial results" in stderr
    startup = _doc(out, "pod_startup")
    assert startup["partial"] is True and startup["run"]["ended"] == "interrupted"
    pods = startup["result"]["data"]["pods"]
    assert 5 <= len(pods) < 30 and startup["run"]["objects_created"] >= 1
    assert _doc(out, "scheduler_latency")["partial"] is True
    assert 'id="partial"' in (out / "report.html").read_text()


def test_a_run_that_fails_writes_what_it_measured_and_cleans_up(local_cluster, tmp_path):
    out = tmp_path / "failed"
    result = local_cluster.cli.run("run", "density", "--name", local_cluster.name, "--pods-per-node", "10",
                                   "--rate", "2", "--timeout", "6", "--measure", "pod_startup", "--out", str(out),
                                   timeout=300)
    assert_one_line_error(result, 1, "did not finish in its time")
    startup = _doc(out, "pod_startup")
    assert startup["partial"] is True and startup["run"]["ended"].startswith("failed: the run did not finish")
    assert 0 < len(startup["result"]["data"]["pods"]) < 30
    assert "Partial results: the run failed" in (out / "report.html").read_text()
    assert _run_namespaces(local_cluster) == [] and _run_pods(local_cluster) == []


def test_compare_passes_a_copy_and_flags_an_injected_regression(local_cluster, density_run, tmp_path):
    _, out = density_run
    same = local_cluster.cli.run("compare", str(out), str(out))
    assert same.returncode == 0, same.stdout + same.stderr
    worse = tmp_path / "worse"
    shutil.copytree(out, worse)
    path = worse / "pod_startup.json"
    document = json.loads(path.read_text())
    metric = document["result"]["metrics"]["create_to_running_p99"]
    metric["value"] *= 1.5
    path.write_text(json.dumps(document))
    result = local_cluster.cli.run("compare", str(out), str(worse), "--threshold", "10%", "--html", str(tmp_path / "c.html"))
    assert result.returncode == 3, result.stdout + result.stderr
    assert "create_to_running_p99" in result.stdout and "+50.0%" in result.stdout
    assert "worse" in (tmp_path / "c.html").read_text()


def test_the_html_report_renders_in_chromium_with_every_plot(density_run, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is needed for this test (.ci/run installs it)")
    _, out = density_run
    report = out / "report.html"
    assert "http://" not in report.read_text().replace('xmlns="http://www.w3.org/2000/svg"', "")
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", report.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    dom = result.stdout
    from kubemark_up.run.reports.html import PLOTS

    for plot in PLOTS:
        start = dom.index(f'data-plot="{plot}"')
        chart = dom[start:dom.index("</svg>", start)]
        assert 'class="series"' in chart, (plot, chart[:300])
        assert "no data" not in chart


def test_run_refuses_more_objects_than_allowed(local_cluster):
    result = local_cluster.cli.run("run", "density", "--name", local_cluster.name, "--pods-per-node", "100",
                                   "--max-objects", "50")
    assert_one_line_error(result, 2, "more than --max-objects 50")
    assert _run_namespaces(local_cluster) == []


def test_a_run_with_the_watch_cache_off(cli, tmp_path):
    started = cli.run("start", "--name", "nocache", "--nodes", "1", timeout=600, KUBEMARK_UP_WATCH_CACHE="false")
    try:
        assert started.returncode == 0, started.stderr
        apiservers = [p for p in psutil.process_iter(["cmdline"])
                      if (p.info["cmdline"] or [""])[0].endswith("/kube-apiserver")
                      and any(str(cli.home) in arg for arg in p.info["cmdline"])]
        assert len(apiservers) == 1 and "--watch-cache=false" in apiservers[0].info["cmdline"]
        out = tmp_path / "result"
        result = cli.run("run", "density", "--name", "nocache", "--pods-per-node", "2", "--interval", "2",
                         "--out", str(out), timeout=300)
        assert result.returncode == 0, result.stderr
        document = json.loads((out / "pod_startup.json").read_text())
        assert document["cluster"]["watch_cache"] is False
        assert document["result"]["metrics"]["pods_running"]["value"] == 2, (document["result"]["notes"], document["result"]["data"])
    finally:
        cli.run("stop", "--name", "nocache", "--purge")


def test_load_run_makes_the_mix_scales_updates_and_deletes_it(local_cluster, tmp_path):
    out = tmp_path / "load"
    result = local_cluster.cli.run("run", "load", "--name", local_cluster.name, "--pods-per-node", "4",
                                   "--interval", "2", "--out", str(out), timeout=600)
    assert result.returncode == 0, result.stderr
    startup = _doc(out, "pod_startup")
    phases = [p["phase"] for p in startup["run"]["phases"]]
    assert phases == ["create", "wait Running", "scale", "wait scaled", "update", "wait updated", "delete", "wait deleted"]
    # 12 pods: Deployments of 5, 5 and 2, a Service for every other one, a ConfigMap and a Secret each.
    keys = _doc(out, "api_latency")["result"]["data"]["keys"]
    assert _posts(keys, "deployments") == 3 and _posts(keys, "services") == 2 and _posts(keys, "secrets") == 3
    assert _posts(keys, "configmaps") >= 3  # and the namespace's kube-root-ca.crt
    assert startup["run"]["objects_created"] == 3 + 2 + 3 + 3
    # The update replaced every pod, so more pods were made than the 12 first asked for, each with its entry.
    pods = startup["result"]["data"]["pods"]
    assert len(pods) == _posts(keys, "pods") > 12
    assert all(p["running"] and p["deleted"] for p in pods)
    assert _run_namespaces(local_cluster) == [] and _run_pods(local_cluster) == []


def test_sigterm_cleans_up_and_a_killed_runs_leftovers_go_with_the_next_run(local_cluster):
    def start_and_wait() -> subprocess.Popen:
        process = local_cluster.cli.popen("run", "density", "--name", local_cluster.name, "--pods-per-node", "10",
                                          "--rate", "2", "--measure", "pod_startup")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(_run_pods(local_cluster)) < 3:
            assert process.poll() is None, process.communicate()
            time.sleep(0.5)
        return process

    process = start_and_wait()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130 and "interrupted" in stderr, stderr
    assert _run_namespaces(local_cluster) == []
    # SIGKILL leaves no chance to clean up: its namespace stays, recorded.
    process = start_and_wait()
    process.kill()
    process.wait(timeout=30)
    left = _run_namespaces(local_cluster)
    assert len(left) == 1
    # A namespace no run recorded is never touched, even with a run's label.
    assert local_cluster.kubectl("create", "namespace", "not-a-run").returncode == 0
    assert local_cluster.kubectl("label", "namespace", "not-a-run", f"{RUN_LABEL}=elsewhere").returncode == 0
    try:
        result = local_cluster.cli.run("run", "density", "--name", local_cluster.name, "--pods-per-node", "1",
                                       "--measure", "pod_startup", timeout=300)
        assert result.returncode == 0, result.stderr
        assert "did not clean up after itself" in result.stderr
        assert [n["metadata"]["name"] for n in _run_namespaces(local_cluster)] == ["not-a-run"]
        assert _run_pods(local_cluster) == []
        assert local_cluster.kubectl("get", "namespace", "not-a-run").returncode == 0
    finally:
        local_cluster.kubectl("delete", "namespace", "not-a-run", timeout=120)
