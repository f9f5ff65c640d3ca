"""The API-machinery workloads of `kubemark-up run` on the session's local cluster, at
small scale: objects really made and removed (after a run, Ctrl-C or SIGKILL), the
achieved rate the one asked where the machine keeps up, the informer logger's count
the changes made, watch-storm's deliveries counted exactly, http2-baseline's bytes
the same on both ends; Flunders through a real aggregated API server, which is gone
after the run, and which `stop` stops when a run was killed."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import psutil

from tests.support.cli import RunningCluster, marked_processes

RUN_LABEL = "kubemark-up.run"
CRD = "churnobjects.kubemark-up.io"


def _values(out: Path, name: str) -> dict:
    document = json.loads((out / f"{name}.json").read_text())
    return {k: m["value"] for k, m in document["result"]["metrics"].items()}


def _labelled(cluster: RunningCluster, kind: str) -> list[dict]:
    listing = cluster.kubectl("get", kind, "-A", "-l", RUN_LABEL, "-o", "json")
    assert listing.returncode == 0, listing.stderr
    return json.loads(listing.stdout)["items"]


def _churn_objects(cluster: RunningCluster) -> list[dict]:
    """The custom resources, read without kubectl's discovery cache (the CRD comes and goes)."""
    listing = cluster.kubectl("get", "--raw", f"/apis/kubemark-up.io/v1/churnobjects?labelSelector={RUN_LABEL}")
    if listing.returncode != 0 and "NotFound" in listing.stderr:
        return []
    assert listing.returncode == 0, listing.stderr
    return json.loads(listing.stdout)["items"]


def _crd(cluster: RunningCluster) -> bool:
    return cluster.kubectl("get", "crd", CRD).returncode == 0


def _nothing_left(cluster: RunningCluster) -> None:
    assert _labelled(cluster, "namespaces") == []
    assert _labelled(cluster, "configmaps") == []
    assert not _crd(cluster)


def _run(cluster: RunningCluster, workload: str, out: Path, *args: str) -> None:
    result = cluster.cli.run("run", workload, "--name", cluster.name, "--measure", "resources", "--interval", "2",
                             "--out", str(out), *args, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_configmap_churn_open_loop_with_the_informer_logger(local_cluster, tmp_path):
    out = tmp_path / "open"
    _run(local_cluster, "configmap-churn", out, "--rate", "20", "--set", "duration=5", "--set", "lifetime=1",
         "--set", "informer=true")
    churn = _values(out, "configmap_churn")
    assert churn["creates"] == churn["deletes"] == 100 and churn["errors"] == 0
    # 20/s is well within this machine: the rate achieved is the one asked.
    assert churn["requested_rate"] == 20 and abs(churn["achieved_rate"] - 20) / 20 < 0.15
    assert 0 < churn["create_p50"] <= churn["create_p99"] <= churn["create_max"]
    informer = _values(out, "informer")
    assert informer["changes_made"] == informer["notifications"] == informer["dequeued"] == 200
    assert informer["missed"] == 0 and informer["other_notifications"] == 0
    assert 0 < informer["notify_p50"] <= informer["notify_p99"] <= informer["dequeue_max"]
    document = json.loads((out / "informer.json").read_text())
    assert document["run"]["workload"] == "configmap-churn" and document["cluster"]["watch_cache"] is True
    changes = document["result"]["data"]["changes"]
    assert sorted(c["op"] for c in changes) == ["create"] * 100 + ["delete"] * 100
    assert all(c["written"] <= c["notified"] <= c["dequeued"] for c in changes)
    assert (out / "report.html").exists()
    same = local_cluster.cli.run("compare", str(out), str(out))
    assert same.returncode == 0, same.stdout + same.stderr
    _nothing_left(local_cluster)


def test_configmap_churn_closed_loop(local_cluster, tmp_path):
    out = tmp_path / "closed"
    _run(local_cluster, "configmap-churn", out, "--closed-loop", "--set", "workers=3", "--set", "duration=3",
         "--set", "informer=true")
    churn = _values(out, "configmap_churn")
    assert churn["creates"] == churn["updates"] == churn["deletes"] > 0 and churn["errors"] == 0
    assert churn["achieved_rate"] > 0 and "requested_rate" not in churn
    informer = _values(out, "informer")
    assert informer["notifications"] == informer["dequeued"] == 3 * churn["creates"] == informer["changes_made"]
    _nothing_left(local_cluster)


def test_cr_churn_installs_its_crd_and_removes_it(local_cluster, tmp_path):
    out = tmp_path / "cr"
    _run(local_cluster, "cr-churn", out, "--rate", "10", "--set", "duration=3", "--set", "lifetime=0.5",
         "--set", "informer=true")
    churn = _values(out, "cr_churn")
    assert churn["creates"] == churn["deletes"] == 30 and churn["errors"] == 0
    informer = _values(out, "informer")
    assert informer["notifications"] == informer["changes_made"] == 60
    record = json.loads(next((local_cluster.dir / "runs").glob(
        f"{json.loads((out / 'cr_churn.json').read_text())['run']['id']}.json")).read_text())
    assert record["status"] == "cleaned"
    assert record["cluster_objects"] == [f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD}"]
    _nothing_left(local_cluster)


def test_cr_churn_interrupted_or_killed_leaves_nothing(local_cluster):
    def start_and_wait():
        process = local_cluster.cli.popen("run", "cr-churn", "--name", local_cluster.name, "--rate", "5",
                                          "--set", "duration=60", "--set", "lifetime=30", "--measure", "resources")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(_churn_objects(local_cluster)) < 3:
            assert process.poll() is None, process.communicate()
            time.sleep(0.5)
        assert _crd(local_cluster) and len(_churn_objects(local_cluster)) >= 3
        return process

    process = start_and_wait()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr, stderr
    _nothing_left(local_cluster)
    # SIGKILL: no chance to clean up; the next run (any workload) deletes the CRD it recorded.
    process = start_and_wait()
    process.kill()
    process.wait(timeout=30)
    assert _crd(local_cluster)
    result = local_cluster.cli.run("run", "http2-baseline", "--name", local_cluster.name, "--measure", "resources",
                                   "--set", "blocks=5", "--set", "threads=1", "--set", "connections=1", timeout=300)
    assert result.returncode == 0, result.stderr
    assert "did not clean up after itself" in result.stderr
    _nothing_left(local_cluster)
    assert _churn_objects(local_cluster) == []


def test_watch_storm_counts_every_delivery(local_cluster, tmp_path):
    out = tmp_path / "storm"
    _run(local_cluster, "watch-storm", out, "--rate", "5", "--set", "steps=3,12", "--set", "writes=10",
         "--set", "window=1")
    storm = _values(out, "watch_storm")
    for watchers in (3, 12):
        # Every write reaches every watcher, once: across the server-ended windows too.
        assert storm[f"w{watchers}_deliveries"] == storm[f"w{watchers}_expected"] == 10 * watchers
        assert storm[f"w{watchers}_missing"] == 0 and storm[f"w{watchers}_duplicates"] == 0
        assert storm[f"w{watchers}_dropped"] == 0 and storm[f"w{watchers}_relists"] == 0
        assert 0 < storm[f"w{watchers}_delivery_p50"] <= storm[f"w{watchers}_delivery_p99"]
        assert storm[f"w{watchers}_kube-apiserver_rss_mib"] > 10 and storm[f"w{watchers}_etcd_rss_mib"] > 1
    # 1 s windows over 2 s of writes: the watchers re-opened their watches from where they were.
    assert storm["w3_rewatches"] + storm["w12_rewatches"] > 0
    steps = json.loads((out / "watch_storm.json").read_text())["result"]["data"]["steps"]
    assert [s["watchers"] for s in steps] == [3, 12] and all(s["open"] == s["watchers"] for s in steps)
    _nothing_left(local_cluster)


def test_http2_baseline_figures_agree_with_the_bytes_sent(local_cluster, tmp_path):
    out = tmp_path / "h2"
    _run(local_cluster, "http2-baseline", out, "--set", "size=16384", "--set", "period=0.01", "--set", "blocks=100",
         "--set", "threads=4", "--set", "connections=2")
    h2 = _values(out, "http2_baseline")
    assert h2["bytes_sent"] == h2["bytes_received"] == 4 * 100 * 16384
    assert h2["send_rate"] > 0 and h2["receive_rate"] > 0
    document = json.loads((out / "http2_baseline.json").read_text())["result"]["data"]
    assert sum(s["bytes"] for s in document["client_streams"]) == h2["bytes_received"]
    assert all(s["version"] == "HTTP/2" and s["error"] is None for s in document["client_streams"])
    # The rates are the bytes after each stream's first block over the time they took.
    streams = document["server_streams"]
    span = max(s["last"] for s in streams) - min(s["first"] for s in streams)
    assert h2["send_rate"] * 2**20 * span == (h2["bytes_sent"] - 4 * 16384) or abs(
        h2["send_rate"] * 2**20 * span - (h2["bytes_sent"] - 4 * 16384)) < 1


WARDLE = "/apis/wardle.example.com/v1alpha1"


def _sample_apiservers(cluster_dir: Path) -> list[psutil.Process]:
    return [p for p in marked_processes(cluster_dir) if p.name().startswith("sample-apiserve")]


def test_flunder_watch_counts_every_delivery(local_cluster, tmp_path):
    out = tmp_path / "flunder-watch"
    _run(local_cluster, "flunder-watch", out, "--rate", "5", "--set", "steps=3,8", "--set", "writes=10",
         "--set", "window=2")
    storm = _values(out, "flunder_watch")
    for watchers in (3, 8):
        assert storm[f"w{watchers}_deliveries"] == storm[f"w{watchers}_expected"] == 10 * watchers
        assert storm[f"w{watchers}_missing"] == storm[f"w{watchers}_duplicates"] == storm[f"w{watchers}_dropped"] == 0
    assert _sample_apiservers(local_cluster.dir) == []
    _nothing_left(local_cluster)


def test_flunder_churn_through_the_aggregated_api(local_cluster, tmp_path):
    out = tmp_path / "flunder"
    _run(local_cluster, "flunder-churn", out, "--rate", "10", "--set", "duration=3", "--set", "lifetime=0.5",
         "--set", "informer=true")
    churn = _values(out, "flunder_churn")
    assert churn["creates"] == churn["deletes"] == 30 and churn["errors"] == 0
    # Every Flunder was created through the master's aggregation layer and read back through it
    # (the informer lists and watches /apis/wardle.example.com through the master).
    informer = _values(out, "informer")
    assert informer["notifications"] == informer["changes_made"] == 60 and informer["missed"] == 0
    document = json.loads((out / "informer.json").read_text())
    assert document["result"]["data"]["collection"] == f"{WARDLE}/flunders"
    # The Flunders an earlier run (flunder-watch's) kept to the end went with its namespace, through
    # the aggregated API, before its APIService: none was left in etcd.
    notes = json.loads((out / "flunder_churn.json").read_text())["result"]["notes"]
    assert not any("left in etcd" in n for n in notes), notes
    # The server, its APIService and its folder are gone.
    assert _sample_apiservers(local_cluster.dir) == []
    assert local_cluster.kubectl("get", "apiservice", "v1alpha1.wardle.example.com").returncode != 0
    assert list((local_cluster.dir / "runs").glob("*.sample-apiserver")) == []
    _nothing_left(local_cluster)


def test_stop_stops_the_sample_apiserver_of_a_killed_run(cli):
    started = cli.run("start", "--name", "wardle", "--nodes", "0", timeout=600)
    assert started.returncode == 0, started.stderr
    cluster_dir = cli.home / "wardle"
    try:
        process = cli.popen("run", "flunder-churn", "--name", "wardle", "--rate", "5", "--set", "duration=60",
                            "--set", "lifetime=30", "--measure", "resources")
        kubeconfig = cluster_dir / "kubeconfig.kubemark"
        deadline = time.monotonic() + 180
        items: list = []
        while time.monotonic() < deadline and len(items) < 3:
            assert process.poll() is None, process.communicate()
            listing = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "get", "--raw",
                                      f"{WARDLE}/flunders?labelSelector={RUN_LABEL}"],
                                     capture_output=True, text=True, timeout=60)
            items = json.loads(listing.stdout)["items"] if listing.returncode == 0 else []
            time.sleep(0.5)
        assert len(items) >= 3  # Flunders, read through the aggregated API
        process.kill()
        process.wait(timeout=30)
        assert len(_sample_apiservers(cluster_dir)) == 1
    finally:
        stopped = cli.run("stop", "--name", "wardle", "--purge", timeout=300)
    assert stopped.returncode == 0, stopped.stderr
    assert _sample_apiservers(cluster_dir) == [] and marked_processes(cluster_dir) == []


def test_any_workload_can_turn_the_informer_logger_on(local_cluster, tmp_path):
    out = tmp_path / "density"
    _run(local_cluster, "density", out, "--pods-per-node", "1", "--set", "informer=true")
    informer = _values(out, "informer")
    # One Deployment of 3 pods: its create and its delete are the run's changes; the
    # controllers' status updates are notifications of changes the run did not make.
    assert informer["changes_made"] == informer["notifications"] == 2 and informer["missed"] == 0
    assert informer["other_notifications"] > 0
    document = json.loads((out / "informer.json").read_text())
    assert document["result"]["data"]["collection"] == "/apis/apps/v1/deployments"
    _nothing_left(local_cluster)
