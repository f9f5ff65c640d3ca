"""The API-machinery workloads' parts that need no cluster: the Poisson arrivals, the
options' bounds, the informer logger's matching of notifications to writes, and
http2-baseline end to end (its server and clients need only loopback)."""

from __future__ import annotations

import itertools
import statistics
import time

import pytest

from kubemark_up.errors import ConfigError
from kubemark_up.run import runner, workloads
from kubemark_up.run.workloads.base import RunContext
from kubemark_up.run.workloads.churn import ChurnOptions, poisson_arrivals
from kubemark_up.run.workloads.http2 import HTTP2Baseline, HTTP2Options
from kubemark_up.run.workloads.informer import InformerLogger, Notification, WriteLog
from kubemark_up.run.workloads.storm import StormOptions


def test_poisson_arrivals_are_the_count_asked_within_the_duration_with_exponential_gaps():
    arrivals = poisson_arrivals(50, 120, 6000, seed=1)
    assert len(arrivals) == 6000 and arrivals == sorted(arrivals)
    assert arrivals[0] >= 0 and arrivals[-1] < 120
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    # Exponential gaps: the mean is 1/rate and so is the standard deviation.
    assert statistics.mean(gaps) == pytest.approx(1 / 50, rel=0.05)
    assert statistics.stdev(gaps) == pytest.approx(1 / 50, rel=0.1)
    assert poisson_arrivals(50, 120, 6000, seed=1) == arrivals != poisson_arrivals(50, 120, 6000, seed=2)
    # Cut short by a count: the arrivals span count / rate, at the same rate.
    assert poisson_arrivals(10, 60, 20, seed=0)[-1] < 2


def test_churn_options_are_bounded():
    assert ChurnOptions(rate=50, duration=120).count() == 6000
    assert ChurnOptions(rate=50, duration=120, objects=100).count() == 100
    assert ChurnOptions(closed_loop=True, workers=4).count() == 400
    with pytest.raises(ValueError, match="at most 1,000,000"):
        ChurnOptions(rate=10_000, duration=1000)


def test_storm_steps_parse_from_set_and_must_grow():
    assert StormOptions.model_validate({"steps": "100,1000"}).steps == [100, 1000]
    with pytest.raises(ValueError, match="growing"):
        StormOptions.model_validate({"steps": "1000,100"})
    with pytest.raises(ValueError, match="watcher counts"):
        StormOptions.model_validate({"steps": "many"})


@pytest.mark.parametrize(("workload", "options", "message"), [
    ("configmap-churn", {"watchers": "3"}, "has no option 'watchers'"),
    ("watch-storm", {"steps": "5,1"}, "steps"),
    ("http2-baseline", {"threads": "2", "connections": "4"}, "must not be more than threads"),
])
def test_bad_workload_options_are_one_line(tmp_path, workload, options, message):
    request = runner.RunRequest(cluster="x", home=tmp_path, workload=workload, options=options)
    with pytest.raises(ConfigError, match=message):
        runner.check_request(request)


def test_every_new_workload_is_registered_and_runs_without_nodes():
    for name in ("configmap-churn", "cr-churn", "watch-storm", "http2-baseline", "flunder-churn", "flunder-watch"):
        assert name in workloads.names()
        assert workloads.get(name).needs_nodes is False


def test_the_informer_matches_each_notification_to_its_write():
    writes = WriteLog()
    for name in ("a", "b"):
        writes.note("configmaps", "create", "ns", name, 100.0)
        writes.note("configmaps", "update", "ns", name, 101.0)
        writes.note("configmaps", "delete", "ns", name, 102.0)
    writes.note("services", "create", "ns", "a", 100.0)  # another resource: not the informer's
    logger = InformerLogger(None, "/api/v1/configmaps", "x=y", writes)  # type: ignore[arg-type]
    for op, t in (("create", 100.010), ("update", 101.020), ("delete", 102.030)):
        for name in ("a", "b"):
            logger.notifications.append(Notification(op, "ns", name, "1", t, dequeued=t + 0.001))
    logger.notifications.append(Notification("update", "ns", "a", "9", 103.0, dequeued=103.0))  # not ours
    result = logger.result()
    values = {k: m.value for k, m in result.metrics.items()}
    assert values["changes_made"] == values["notifications"] == values["dequeued"] == 6
    assert values["missed"] == 0 and values["other_notifications"] == 1
    assert values["notify_max"] == pytest.approx(0.030)
    assert values["dequeue_max"] == pytest.approx(0.031)
    assert len(result.data["changes"]) == 6


def test_http2_baseline_streams_every_byte_it_sends():
    run = RunContext(kube=None, run_id="t", nodes=0, deadline=time.monotonic() + 120,  # type: ignore[arg-type]
                     make_namespace=lambda index: "unused")
    workload = HTTP2Baseline(HTTP2Options(size=8192, period=0.01, blocks=40, threads=3, connections=2))
    workload.run(run)
    [result] = workload.results()
    values = {k: m.value for k, m in result.metrics.items()}
    assert values["bytes_sent"] == values["bytes_received"] == 3 * 40 * 8192
    assert values["send_rate"] > 0 and values["receive_rate"] > 0
    assert values["requested_rate"] == pytest.approx(3 * 8192 / 0.01 / 2**20)
    assert {s["version"] for s in result.data["client_streams"]} == {"HTTP/2"}
    assert len(result.data["server_streams"]) == 3 and not result.notes
    assert run.progress.phases[-1]["achieved_rate"] == values["receive_rate"]


def test_the_report_plots_the_api_machinery_results_only_where_they_are():
    from kubemark_up.run.reports import html

    documents = {
        "configmap_churn": {"data": {"latencies": {"create": [0.004, 0.005], "delete": [0.006]}}},
        "informer": {"data": {"changes": [{"written": 1.0, "notified": 1.004, "dequeued": 1.005}]}},
        "watch_storm": {"data": {"steps": [
            {"watchers": 10, "delivery_p50": 0.01, "delivery_p99": 0.02, "delivery_max": 0.03,
             "kube-apiserver_rss_mib": 300.0, "etcd_rss_mib": 100.0, "client_rss_mib": 90.0},
            {"watchers": 100, "delivery_p50": 0.02, "delivery_p99": 0.05, "delivery_max": 0.06,
             "kube-apiserver_rss_mib": 320.0, "etcd_rss_mib": 101.0, "client_rss_mib": 95.0}]}},
    }
    page = html.render({"run": {"workload": "watch-storm"}}, documents)
    for plot in ("churn-latency", "informer-delay", "storm-delivery", "storm-memory"):
        start = page.index(f'data-plot="{plot}"')
        assert 'class="series"' in page[start:page.index("</svg>", start)]
    assert 'data-plot="storm-delivery"' not in html.render({"run": {}}, {})
