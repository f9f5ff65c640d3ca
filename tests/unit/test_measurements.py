"""The measurements' arithmetic on inputs whose answers are known by hand: histogram
quantiles as Prometheus' histogram_quantile gives them, /metrics parsing with
Prometheus' parser, nearest-rank percentiles, the pacer's rates, the plots."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from kubemark_up.run.measurements.api_latency import FALLBACK_METRIC, SLI_METRIC, Histogram, delta, parse, slo_class
from kubemark_up.run.model import all_running, percentile
from kubemark_up.run.reports import svg
from kubemark_up.run.workloads.base import Pacer, settled, sizes


def _series(metric: str, verb: str, resource: str, scope: str, buckets: dict[str, int], total: float) -> list[str]:
    labels = f'component="apiserver",group="",resource="{resource}",scope="{scope}",subresource="",verb="{verb}",version="v1"'
    lines = [f'{metric}_bucket{{{labels},le="{le}"}} {count}' for le, count in buckets.items()]
    return [*lines, f"{metric}_sum{{{labels}}} {total}", f"{metric}_count{{{labels}}} {buckets['+Inf']}"]


def _metrics(post_slow: int = 2) -> str:
    """A /metrics text: POST deployments (6 under 50 ms, 2 under 100 ms, post_slow under 1 s),
    LIST pods (1 under 50 ms, 1 above every bound), and a WATCH in the fallback metric."""
    lines = [f"# HELP {SLI_METRIC} Response latency.", f"# TYPE {SLI_METRIC} histogram"]
    lines += _series(SLI_METRIC, "POST", "deployments", "resource",
                     {"0.05": 6, "0.1": 8, "1": 8 + post_slow, "+Inf": 8 + post_slow}, 1.5)
    lines += _series(SLI_METRIC, "LIST", "pods", "namespace", {"0.05": 1, "+Inf": 2}, 3.0)
    lines += [f"# HELP {FALLBACK_METRIC} Response latency.", f"# TYPE {FALLBACK_METRIC} histogram"]
    lines += _series(FALLBACK_METRIC, "WATCH", "pods", "cluster", {"+Inf": 4}, 100.0)
    return "\n".join(lines) + "\n"


METRICS = _metrics()


def test_parse_prefers_the_sli_metric_and_keys_by_verb_resource_subresource_scope():
    metric, snapshot = parse(METRICS)
    assert metric == SLI_METRIC
    assert set(snapshot) == {("POST", "deployments", "", "resource"), ("LIST", "pods", "", "namespace")}
    post = snapshot[("POST", "deployments", "", "resource")]
    assert post.count == 10 and post.total == 1.5 and post.buckets[0.05] == 6


def test_parse_falls_back_and_leaves_out_watches():
    text = "\n".join(line for line in METRICS.splitlines() if SLI_METRIC not in line) + "\n"
    metric, snapshot = parse(text)
    assert metric == FALLBACK_METRIC
    assert snapshot == {}  # its only series is a WATCH


def test_histogram_quantile_interpolates_like_prometheus():
    _, snapshot = parse(METRICS)
    post = snapshot[("POST", "deployments", "", "resource")]
    # rank 5 of 10 lies in (0, 0.05] holding 6: 0.05 * 5/6
    assert post.quantile(0.5) == pytest.approx(0.05 * 5 / 6)
    # rank 9 lies in (0.1, 1] holding 8..10: 0.1 + 0.9 * (9 - 8)/2
    assert post.quantile(0.9) == pytest.approx(0.55)
    # a quantile in the +Inf bucket is the highest finite bound
    listing = snapshot[("LIST", "pods", "", "namespace")]
    assert listing.quantile(0.99) == 0.05
    assert Histogram({math.inf: 0}, 0, 0).quantile(0.5) is None


def test_delta_is_what_happened_between_scrapes():
    _, old = parse(METRICS)
    newer = _metrics(post_slow=6)
    _, new = parse(newer)
    window = delta(new, old)
    # Only the POSTs moved: four calls, all in (0.1, 1].
    assert set(window) == {("POST", "deployments", "", "resource")}
    post = window[("POST", "deployments", "", "resource")]
    assert post.count == 4
    assert 0.1 < post.quantile(0.5) <= 1


def test_slo_classes():
    assert slo_class(("LIST", "pods", "", "namespace")) == "api_list"
    assert slo_class(("LIST", "pods", "", "cluster")) == "api_list"
    assert slo_class(("GET", "pods", "", "resource")) == "api_single_object"
    assert slo_class(("PATCH", "nodes", "status", "resource")) == "api_single_object"
    assert slo_class(("GET", "", "/healthz", "")) is None


def test_nearest_rank_percentile():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99 and percentile(values, 100) == 100
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) is None


def test_pacer_keeps_its_rate_and_reports_what_it_achieved():
    now = [0.0]
    slept = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    pacer = Pacer(10, clock=lambda: now[0], sleep=sleep)
    for _ in range(4):
        pacer.take(5)  # 5 pods every 0.5 s
    assert slept == pytest.approx([0.5, 0.5, 0.5])
    assert pacer.items == 20
    assert pacer.achieved == pytest.approx(10)  # 15 pods after the first burst, over 1.5 s


def test_sizes_split_a_total():
    assert sizes(12, 5) == [5, 5, 2]
    assert sizes(10, 5) == [5, 5]
    assert sizes(0, 5) == []


def test_line_chart_draws_every_series_and_says_no_data():
    chart = svg.line_chart("x", "a <title>", {"one": [(0, 1), (1, 2)], "two": [(0, 3)]}, x_label="t", y_label="v")
    assert chart.count('class="series"') == 2 and 'data-plot="x"' in chart and "a &lt;title&gt;" in chart
    assert "no data" in svg.line_chart("y", "empty", {}, x_label="t", y_label="v")
    assert svg.cdf([3.0, 1.0, 2.0]) == [(1.0, 1 / 3), (2.0, 2 / 3), (3.0, 1.0)]


def test_the_proc_sampler_agrees_with_psutil():
    import os

    import psutil

    from kubemark_up.hosts import LocalHost
    from kubemark_up.hosts.base import Host

    host = LocalHost()
    sum(i * i for i in range(300_000))  # some CPU time of our own
    by_proc = Host.usage(host, [os.getpid(), 999_999_999])  # the SSH hosts' way: /proc in one command
    by_psutil = host.usage([os.getpid()])
    assert set(by_proc) == set(by_psutil) == {os.getpid()}
    cpu, rss = by_proc[os.getpid()]
    assert cpu == pytest.approx(by_psutil[os.getpid()][0], abs=0.2)
    assert rss == pytest.approx(psutil.Process().memory_info().rss, rel=0.2)


def _scheduler_metrics(scheduled: int, unschedulable: int, slow_filters: int) -> str:
    """A kube-scheduler /metrics text: `scheduled` pods bound (e2e and attempts under
    10 ms, two profiles), `unschedulable` failed attempts, Filter taking 1 ms, slow ones 0.1 s."""
    def histogram(name: str, labels: str, buckets: dict[str, int], total: float) -> list[str]:
        sep = "," if labels else ""
        return ([f'{name}_bucket{{{labels}{sep}le="{le}"}} {count}' for le, count in buckets.items()]
                + [f"{name}_sum{{{labels}}} {total}", f"{name}_count{{{labels}}} {buckets['+Inf']}"])

    half = scheduled // 2
    lines = ["# HELP scheduler_pod_scheduling_sli_duration_seconds E2e latency.",
             "# TYPE scheduler_pod_scheduling_sli_duration_seconds histogram"]
    lines += histogram("scheduler_pod_scheduling_sli_duration_seconds", 'attempts="1"',
                       {"0.01": scheduled, "+Inf": scheduled}, 0.005 * scheduled)
    lines += ["# HELP scheduler_scheduling_attempt_duration_seconds Attempt latency.",
              "# TYPE scheduler_scheduling_attempt_duration_seconds histogram"]
    for profile, count in (("default-scheduler", half), ("other", scheduled - half)):
        lines += histogram("scheduler_scheduling_attempt_duration_seconds", f'profile="{profile}",result="scheduled"',
                           {"0.001": 0, "0.01": count, "+Inf": count}, 0.005 * count)
    lines += histogram("scheduler_scheduling_attempt_duration_seconds", 'profile="default-scheduler",result="unschedulable"',
                       {"0.001": unschedulable, "0.01": unschedulable, "+Inf": unschedulable}, 0.0005 * unschedulable)
    lines += ["# HELP scheduler_framework_extension_point_duration_seconds Extension point latency.",
              "# TYPE scheduler_framework_extension_point_duration_seconds histogram"]
    filters = scheduled + unschedulable
    lines += histogram("scheduler_framework_extension_point_duration_seconds",
                       'extension_point="Filter",profile="default-scheduler",status="Success"',
                       {"0.001": filters, "0.1": filters + slow_filters, "+Inf": filters + slow_filters}, 0.01)
    return "\n".join(lines) + "\n"


def test_scheduler_latency_is_what_happened_between_two_reads():
    from kubemark_up.errors import RunError
    from kubemark_up.run.measurements.base import MeasureContext
    from kubemark_up.run.measurements.scheduler import SchedulerLatency, parse

    snapshot = parse(_scheduler_metrics(10, 1, 0))
    # Summed over profiles, kept per result and per extension point.
    assert snapshot[("attempt", "scheduled")].count == 10 and snapshot[("attempt", "unschedulable")].count == 1
    assert snapshot[("e2e", "")].count == 10 and snapshot[("extension_point", "Filter")].count == 11

    texts = iter([_scheduler_metrics(10, 1, 0), _scheduler_metrics(30, 3, 2)])
    asked = []

    def read(component: str) -> str:
        asked.append(component)
        return next(texts)

    ctx = MeasureContext(kube=None, run_id="r", slo_overrides={}, sampler=None, interval=1,  # type: ignore[arg-type]
                         component_metrics=read)
    measurement = SchedulerLatency(ctx)
    measurement.start()
    measurement.stop()
    result = measurement.result()
    assert asked == ["kube-scheduler", "kube-scheduler"]
    metrics = {k: m.value for k, m in result.metrics.items()}
    # 20 pods bound between the reads, 2 attempts found no node.
    assert metrics["pods_scheduled"] == 20 and metrics["attempts_scheduled"] == 20
    assert metrics["attempts_unschedulable"] == 2
    # All 20 in (0.001, 0.01]: rank 10 of 20 is half-way through that bucket.
    assert metrics["attempt_p50"] == pytest.approx(0.001 + 0.009 * 10 / 20)
    assert metrics["e2e_p99"] == pytest.approx(0.01 * 19.8 / 20)
    # 24 Filter calls, the 2 slowest in (0.001, 0.1]: p99 lands there.
    assert 0.001 < metrics["Filter_p99"] <= 0.1
    assert result.slos == [] and not result.notes
    assert {row["series"] for row in result.data["histograms"]} == {"e2e", "attempt", "extension_point"}

    def refused(component: str) -> str:
        raise RunError("kube-scheduler's /metrics on localhost answered HTTP 403")

    ctx.component_metrics = refused
    failed = SchedulerLatency(ctx)
    failed.start()
    failed.stop()
    notes = failed.result().notes
    assert notes[0] == "kube-scheduler's /metrics on localhost answered HTTP 403" and "fewer than two" in notes[1]


def test_a_host_reads_an_url_without_credentials(tmp_path):
    """Host.fetch, as the measurements read the components' /metrics: status and body,
    also of a refusal."""
    import http.server
    import threading

    from kubemark_up.errors import HostError
    from kubemark_up.hosts import LocalHost

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code, body = (200, b"up 1\n") if self.path == "/metrics" else (403, b"forbidden")
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        host = LocalHost()
        assert host.fetch(f"{base}/metrics") == (200, "up 1\n")
        assert host.fetch(f"{base}/other") == (403, "forbidden")
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(HostError, match=r"GET http://127\.0\.0\.1:1/metrics failed"):
        LocalHost().fetch("http://127.0.0.1:1/metrics", timeout=2)


class _Listing:
    """Answers a run's GETs of one namespace from fixed lists (no master needed)."""

    def __init__(self, deployments: list[dict], pods: list[dict]) -> None:
        self.answers = {"deployments": deployments, "pods": pods}

    def request(self, method: str, path: str, **_: object) -> dict:
        return {"items": self.answers[path.rsplit("/", 1)[-1]]}


def _pod(phase: str, state: str, ready: str, *, deleting: bool = False) -> dict:
    meta = {"labels": {"app": "density-0"}, **({"deletionTimestamp": "2026-12-02T16:49:00Z"} if deleting else {})}
    return {"metadata": meta, "spec": {"containers": [{"name": "pause"}]},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": ready}],
                       "containerStatuses": [{"name": "pause", "state": {state: {}}}]}}


def test_a_deployment_is_settled_only_when_its_pods_run():
    # As a v1.36 hollow kubelet reported it (seen on a fresh cluster): Ready, yet the
    # container still ContainerCreating and the phase Pending; the Deployment counts it ready.
    status = {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2}
    deployments = [{"metadata": {"name": "density-0", "generation": 1}, "status": status}]
    run = SimpleNamespace(run_id="r", namespace=lambda index: f"ns-{index}")
    creating = [_pod("Pending", "waiting", "True"), _pod("Running", "running", "True")]
    run.kube = _Listing(deployments, creating)
    assert not settled(run, [0], {(0, "density-0"): 2})
    run.kube = _Listing(deployments, [_pod("Running", "running", "True")] * 2 + [_pod("Running", "running", "True", deleting=True)])
    assert settled(run, [0], {(0, "density-0"): 2})
    run.kube = _Listing(deployments, [_pod("Running", "running", "True")])
    assert not settled(run, [0], {(0, "density-0"): 2})
    assert not all_running(_pod("Running", "waiting", "True")) and all_running(_pod("Running", "running", "False"))
