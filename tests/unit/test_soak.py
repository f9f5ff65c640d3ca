"""The soak benchmark's pure parts: the churn pattern, the slope and its interval, the
counters, the CSV, the figures read from /metrics and the fleet's status files. No
binaries: the soak itself is validated by running it."""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import soak


@pytest.mark.parametrize(("df", "expected"), [(1, 12.7062), (2, 4.3027), (5, 2.5706), (10, 2.2281), (30, 2.0423),
                                              (1000, 1.9623)])
def test_t_quantile_matches_the_tables(df: float, expected: float) -> None:
    assert soak.t_quantile(0.975, df) == pytest.approx(expected, abs=2e-4)


def test_a_steady_series_has_an_interval_holding_zero() -> None:
    rng = random.Random(1)
    minutes = [float(m) for m in range(60)]
    values = [500 + rng.gauss(0, 2) for _ in minutes]
    fit = soak.fit_slope(minutes, values)
    assert fit is not None and fit.low is not None and fit.high is not None
    assert fit.low <= 0 <= fit.high
    assert soak.verdict(fit, 0.05) == (True, "no growth beyond noise (the 95 % interval holds 0)")
    # An interval reaching past the bound still holds 0, and says how much growth it leaves open.
    held, words = soak.verdict(fit, 0.01)
    assert held is True
    assert words == f"no growth beyond noise (the 95 % interval holds 0); a growth of up to {fit.high:+.3f} MiB/min is not ruled out"


def test_a_leak_is_found_and_its_slope_measured() -> None:
    rng = random.Random(2)
    minutes = [float(m) for m in range(120)]
    values = [400 + 0.5 * m + rng.gauss(0, 1) for m in minutes]
    fit = soak.fit_slope(minutes, values)
    assert fit is not None and fit.low is not None
    assert fit.slope == pytest.approx(0.5, abs=0.02)
    assert fit.low > 0.05
    held, words = soak.verdict(fit, 0.05)
    assert held is False and words.startswith("grows")


def test_a_slope_below_the_bound_is_noise_though_not_zero() -> None:
    minutes = [float(m) for m in range(100)]
    values = [300 + 0.01 * m + (0.001 if m % 2 else -0.001) for m in minutes]
    fit = soak.fit_slope(minutes, values)
    assert fit is not None and fit.low is not None and fit.high is not None
    assert 0 < fit.low < fit.high < 0.05
    held, words = soak.verdict(fit, 0.05)
    assert held is True and "below 0.05" in words


def test_the_standard_error_is_the_textbook_one_for_independent_residuals() -> None:
    # x 0..4, y with residuals alternating in sign: r1 < 0, so n is not reduced.
    minutes = [0.0, 1.0, 2.0, 3.0, 4.0]
    values = [1.0, 3.0, 2.0, 5.0, 4.0]
    fit = soak.fit_slope(minutes, values)
    assert fit is not None and fit.high is not None
    # By hand: slope 0.8, intercept 1.4, residuals -0.4 0.8 -1 1.2 -0.6, SSR 3.6, Sxx 10.
    se = math.sqrt(3.6 / 3 / 10)
    assert fit.slope == pytest.approx(0.8)
    assert fit.effective == 5
    assert fit.high - fit.slope == pytest.approx(soak.t_quantile(0.975, 3) * se)


def test_autocorrelated_residuals_widen_the_interval() -> None:
    minutes = [float(m) for m in range(60)]
    wave = [math.sin(m / 6) for m in minutes]  # slow wander: strongly correlated neighbours
    fit = soak.fit_slope(minutes, [100 + w for w in wave])
    assert fit is not None and fit.r1 > 0.5 and fit.effective < 15


def test_too_few_samples_are_not_judged() -> None:
    assert soak.fit_slope([0.0, 1.0], [1.0, 2.0]) is None
    assert soak.fit_slope([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None
    assert soak.verdict(None, 0.05) == (None, "too few samples to judge")


def test_a_counter_increase_survives_a_restart() -> None:
    assert soak.increase([10, 12, None, 15, 3, 5]) == 2 + 3 + 3 + 2
    assert soak.increase([None, None]) is None
    assert soak.increase([7]) == 0


def test_churn_patterns_and_their_bounds() -> None:
    assert soak.parse_churn("steady:1000:2", 100) == soak.Churn("steady", pods=1000, rate=2.0)
    assert soak.parse_churn("scale:200:600:60", 200) == soak.Churn("scale", low=200, high=600, period=60.0)
    assert soak.parse_churn("none", 1) == soak.Churn("none")
    for bad, why in [("steady:10", "expected"), ("scale:600:200:60", "LOW < HIGH"), ("scale:1:2:1", "SECONDS >= 10"),
                     ("steady:10:0", "PER_SECOND"), ("steady:x:1", "invalid literal"), ("steady:2000:1", "do not fit")]:
        with pytest.raises(ValueError, match=why):
            soak.parse_churn(bad, 10)


def test_the_csv_round_trips_with_empty_cells_for_na(tmp_path: Path) -> None:
    rows = [{"phase": "soak", "time": "2026-12-07T14:00:00+00:00", "minutes": 0.0, "nodes_ready": 100, "nodes_total": 100,
             "apiserver_rss_mib": 512.5, "nodes_goroutines": None, "note": "a, \"quoted\" note", "restarts": {"etcd": 0}},
            {"phase": "end", "time": "2026-12-07T14:01:00+00:00", "minutes": 1.0, "events_dropped": 3}]
    path = tmp_path / "soak.csv"
    soak.write_csv(path, rows)
    back = soak.read_csv(path)
    assert list(back[0]) == soak.FIELDS
    assert back[0]["apiserver_rss_mib"] == 512.5 and back[0]["nodes_ready"] == 100.0
    assert back[0]["nodes_goroutines"] is None and back[0]["events_dropped"] is None
    assert back[0]["note"] == "a, \"quoted\" note" and back[1]["phase"] == "end" and back[1]["events_dropped"] == 3


def test_a_csv_of_something_else_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a soak CSV"):
        soak.read_csv(path)


def test_apiserver_figures_read_goroutines_and_codes() -> None:
    metrics = "\n".join([
        "# HELP go_goroutines Number of goroutines that currently exist.",
        "# TYPE go_goroutines gauge",
        "go_goroutines 4321",
        "# HELP apiserver_request_total [STABLE] Counter of apiserver requests",
        "# TYPE apiserver_request_total counter",
        'apiserver_request_total{code="200",resource="pods",verb="LIST"} 10',
        'apiserver_request_total{code="200",resource="nodes",verb="GET"} 5',
        'apiserver_request_total{code="429",resource="pods",verb="LIST"} 2',
        'apiserver_request_total{code="503",resource="pods",verb="LIST"} 1',
        'apiserver_request_total{code="504",resource="leases",verb="PUT"} 4',
        "# HELP apiserver_request_duration_seconds x",
        "# TYPE apiserver_request_duration_seconds histogram",
        'apiserver_request_duration_seconds_bucket{le="1"} 3',
    ])
    goroutines, codes = soak.apiserver_figures(metrics)
    assert goroutines == 4321
    assert codes == {"200": 15, "429": 2, "503": 1, "504": 4}
    assert soak.errors_of(codes) == (2, 5)


def test_fleet_figures_read_what_the_status_files_carry() -> None:
    older = [{"nodes": 50, "requests": {"kubelet PUT leases": 100, "kubelet dropped events": 2}},
             {"nodes": 50, "requests": {"kubelet PUT leases": 90}}]
    assert soak.fleet_figures(older) == {"goroutines": None, "heap_mib": None, "events_dropped": 2, "codes": None}
    # The fleet's own fields: Events counted by fate, responses by "component verb resource code".
    current = [{"events": {"recorded": 9, "sent": 7, "dropped": 1},
                "responses": {"kubelet PUT leases 200": 7, "kubelet GET pods 429": 1, "kube-proxy WATCH services error": 3}},
               {"events": {"recorded": 2, "sent": 2, "dropped": 4}, "responses": {"kubelet PATCH nodes/status 503": 2}}]
    figures = soak.fleet_figures(current)
    assert figures == {"goroutines": None, "heap_mib": None, "events_dropped": 5,
                       "codes": {"200": 7, "429": 1, "error": 3, "503": 2}}
    assert soak.errors_of(figures["codes"]) == (1, 2)
    other = [{"goroutines": 900, "heap_live_bytes": 3 * 2**20, "events_dropped": 5, "requests_by_code": {"200": 7}},
             {"goroutines": 100, "heap_live_bytes": 2**19, "events_dropped": 0, "codes": {"503": 2}}]
    assert soak.fleet_figures(other) == {"goroutines": 1000, "heap_mib": 3.5, "events_dropped": 5,
                                         "codes": {"200": 7, "503": 2}}
    assert soak.fleet_figures([]) == {"goroutines": None, "heap_mib": None, "events_dropped": None, "codes": None}


def _sample(minutes: float, **values: float | str | None) -> dict:
    row: dict = dict.fromkeys(soak.FIELDS)
    row.update(phase="soak", minutes=minutes, nodes_ready=100, nodes_total=100, master_restarts=0, pods_running=200,
               pods_wanted=200, apiserver_429=0, apiserver_5xx=0, events_dropped=0)
    row.update(values)
    return row


def test_the_analysis_fits_after_the_warmup_and_sums_the_counters() -> None:
    rng = random.Random(3)
    samples = [_sample(m, nodes_rss_mib=80 + (0 if m >= 10 else 20 - 2 * m) + rng.gauss(0, 0.3),
                       apiserver_rss_mib=600 + 1.0 * m, apiserver_429=m // 10, apiserver_5xx=0, events_dropped=0,
                       apiserver_goroutines=3000 + m)
               for m in range(60)]
    samples.append(_sample(61, phase="end", nodes_rss_mib=1000, apiserver_429=5))
    analysis = soak.analyse(samples, warmup=10, bound=0.05)
    assert analysis["fitted"] == 50
    nodes, apiserver = analysis["slopes"]["nodes_rss_mib"], analysis["slopes"]["apiserver_rss_mib"]
    assert nodes["held"] is True  # the warm-up's fall and the end's value are left out
    assert apiserver["held"] is False and apiserver["fit"]["slope"] == pytest.approx(1.0)
    assert analysis["apiserver_429"] == 5 and analysis["goroutines"]["apiserver_goroutines"][0] == 3010
    assert not soak.held(analysis)
    text = soak.table(analysis, "fleet")
    assert "| fleet RSS slope |" in text and "grows" in text and "| fleet goroutines after warm-up | n/a |" in text


def test_a_restart_or_unready_end_fails_the_soak() -> None:
    steady = [_sample(m, nodes_rss_mib=80.0 + (m % 2) * 0.1, apiserver_rss_mib=600.0 - (m % 2) * 0.1) for m in range(30)]
    assert soak.held(soak.analyse(steady, warmup=5, bound=0.05))
    restarted = [*steady, _sample(30, master_restarts=1)]
    assert not soak.held(soak.analyse(restarted, warmup=5, bound=0.05))
    unready = [*steady, _sample(30, nodes_ready=99)]
    assert not soak.held(soak.analyse(unready, warmup=5, bound=0.05))


class _Pods:
    """An apiserver of three pods, one of them being deleted, for the churn's calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def request(self, method: str, path: str, **kwargs: object) -> dict:
        self.calls.append((method, path))
        pods = [{"metadata": {"name": "a"}}, {"metadata": {"name": "b"}},
                {"metadata": {"name": "c", "deletionTimestamp": "2026-12-07T14:00:00Z"}}]
        return {"items": pods} if method == "GET" else {"kind": "Pod"}


def test_the_steady_churn_deletes_listed_pods_not_those_already_going() -> None:
    kube = _Pods()
    churner = soak.Churner(kube, soak.Churn("steady", pods=3, rate=50))
    churner.start()
    for _ in range(200):  # bounded: 10 s at most
        if churner.deleted >= 4:
            break
        churner.join(timeout=0.05)
    churner.halt.set()
    churner.join(timeout=5)
    deleted = {path.rsplit("/", 1)[1] for method, path in kube.calls if method == "DELETE"}
    assert churner.deleted >= 4 and deleted == {"a", "b"} and churner.errors == 0
    assert all(path == "/api/v1/namespaces/soak/pods" for method, path in kube.calls if method == "GET")


def test_a_sample_that_hangs_is_given_up_and_the_soak_goes_on(monkeypatch, tmp_path: Path, capfd) -> None:
    import threading
    import time

    stuck = threading.Event()
    monkeypatch.setattr(soak, "take_sample", lambda *args: stuck.wait(30) or {})
    churner = type("Churner", (), {"wanted": 10, "errors": 0})()
    began = time.monotonic()
    row = soak.bounded_sample(tmp_path, None, churner, began, "soak", timeout=0.3)
    stuck.set()
    assert time.monotonic() - began < 5
    assert row["phase"] == "soak" and row["pods_wanted"] == 10 and "given up after 0 s" in row["note"]
    assert 'File "' in capfd.readouterr().err  # the stuck call's stack, for whoever reads the log
    good = [{"phase": "soak", "time": "t", "minutes": float(m), "nodes_rss_mib": 500.0, "apiserver_rss_mib": 900.0,
             "nodes_ready": 5, "nodes_total": 5, "master_restarts": 0} for m in range(12)]
    analysis = soak.analyse([*good[:6], row | {"minutes": 6.5}, *good[6:]], 1.0, 0.05)
    assert analysis["samples"] == 13


def test_a_growing_live_heap_is_shown_but_the_soak_is_held_to_rss() -> None:
    rows = [_sample(float(m), nodes_rss_mib=500.0 + (m % 2) * 0.01, apiserver_rss_mib=900.0,
                    nodes_heap_mib=100.0 + 2 * m) for m in range(40)]
    analysis = soak.analyse(rows, 5.0, 0.05)
    assert analysis["slopes"]["nodes_heap_mib"]["fit"]["slope"] == pytest.approx(2.0)
    assert analysis["slopes"]["nodes_heap_mib"]["held"] is False and soak.held(analysis)
    assert "live heap slope (shown, not judged)" in soak.table(analysis, "fleet")


def test_the_default_warmup_outlasts_the_apiservers_event_ttl_on_long_soaks() -> None:
    assert soak.default_warmup(120) == 60 and soak.default_warmup(300) == 60 and soak.default_warmup(30) == 15
