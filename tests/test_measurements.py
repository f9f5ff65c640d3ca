"""The measurements' arithmetic on inputs whose answers are known by hand: histogram
quantiles as Prometheus' histogram_quantile gives them, /metrics parsing with
Prometheus' parser, nearest-rank percentiles, the pacer's rates, the plots."""

from __future__ import annotations

import math

import pytest

from kubemark_up.measurements.api_latency import FALLBACK_METRIC, SLI_METRIC, Histogram, delta, parse, slo_class
from kubemark_up.measurements.base import percentile
from kubemark_up.reports import svg
from kubemark_up.workloads.base import Pacer, sizes


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
