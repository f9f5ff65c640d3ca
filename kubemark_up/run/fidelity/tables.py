"""The fidelity report as the terminal shows it: one table per kind of row, each with
the reference's figure and its basis (measured on a real node, or derived) beside
what the nodes did, and the lines that name what failed."""

from __future__ import annotations

from collections.abc import Iterator

from rich.table import Table
from rich.text import Text

from kubemark_up.run.fidelity.analysis import FAIL, MIN_LIFETIME, PASS, Report

SHOWN_NODES = 20  # failing nodes listed by name; the JSON report has them all
SHOWN_NAMES = 5  # node names in a line about codes


def _verdict(verdict: str) -> Text:
    if verdict == FAIL:
        return Text("FAIL", style="bold red")
    return Text(verdict, style="green" if verdict == PASS else "yellow")


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}".rstrip("0").rstrip(".") if value else "0"


def _names(names: list[str]) -> str:
    more = f" and {len(names) - SHOWN_NAMES} more" if len(names) > SHOWN_NAMES else ""
    return ", ".join(names[:SHOWN_NAMES]) + more


def tables(report: Report) -> Iterator[Table | str]:
    yield f"reference: {report.source}"
    yield from _nodes(report)
    requests = Table("component", "verb", "resource", "sub", "count", "/node/min", "steady", "reference", "basis",
                     "verdict", title=f"requests at rest of {report.nodes} nodes over {report.minutes:g} min (steady: "
                                      "WATCH, open per node over the mean lifetime)")
    for b in report.requests:
        requests.add_row(b.component, b.verb, b.resource, b.subresource, str(b.count), _num(b.rate),
                         _num(b.steady_rate), _num(b.reference), b.basis, _verdict(b.verdict))
    yield requests
    watches = Table("component", "resource", "open", "per node", "reference", "basis", "verdict",
                    title="open watches at the end")
    for w in report.watches:
        watches.add_row(w.component, w.resource, str(w.open), _num(w.per_node), str(w.reference), w.basis,
                        _verdict(w.verdict))
    yield watches
    if report.connections:
        connections = Table("component", "reference", "basis", "nodes counted", "per node", "off", "verdict", "why",
                            title="TCP connections per node to the apiserver, the most open at once")
        for c in report.connections:
            spread = "" if c.low is None else str(c.low) if c.low == c.high else f"{c.low}-{c.high}"
            connections.add_row(c.component, "-" if c.reference is None else str(c.reference), c.basis,
                                str(c.nodes) if c.nodes else "", spread, _names(c.off), _verdict(c.verdict), c.why)
        yield connections
        for c in report.connections:
            if c.above:
                yield "held more connections than a real node: " + _names(
                    [f"{node} (first at {when or 'an unknown time'})" for node, when in sorted(c.above.items())])
    yield from _lifecycle(report)
    yield from _codes(report)
    if report.strangers:
        yield (f"left out: {len(report.strangers)} kubelet(s) the cluster's state does not list "
               f"({_names(sorted(report.strangers))})")
    yield from (f"note: {note}" for note in report.notes)


def _nodes(report: Report) -> Iterator[Table | str]:
    failing = report.failing_nodes
    yield (f"nodes: {report.nodes} in the cluster's state, {report.heard} heard from in the window"
           + (f", {len(failing)} failing" if failing else ", all heard throughout"))
    if not failing:
        return
    table = Table("node", "address", "kubelet requests", "longest silence", "connections", "why",
                  title="nodes that fail")
    for row in failing[:SHOWN_NODES]:
        table.add_row(row.name, row.address or "-", str(row.requests), f"{row.silence:.0f} s",
                      "-" if row.connections is None else str(row.connections), row.why)
    yield table
    if len(failing) > SHOWN_NODES:
        yield f"... and {len(failing) - SHOWN_NODES} more failing node(s) (all in the JSON report)"


def _lifecycle(report: Report) -> Iterator[Table | str]:
    life = report.lifecycle
    if life is None:
        return
    yield (f"pod lifecycles: {life.started} pod(s) started in the window, {life.judged} judged whole"
           + (f"; {life.running} still running when the log was read" if life.running else "")
           + (f"; {life.shared} beside older pods of their node and namespace" if life.shared else "")
           + (f"; {life.short} not judged: their node and namespace had a pod deleted within"
              f" {MIN_LIFETIME:.0f} s, before its first resync" if life.short else "")
           + (f" (reference pod: {life.pod})" if life.pod else ""))
    table = Table("component", "verb", "resource", "sub", "count", "per pod", "reference", "basis", "verdict",
                  title=f"requests per pod lifecycle, over {life.judged} whole lifecycle(s)")
    for b in life.requests:
        table.add_row(b.component, b.verb, b.resource, b.subresource, str(b.count), _num(b.per_pod),
                      _num(b.reference), b.basis, _verdict(b.verdict))
    yield table
    timing = Table("figure", "pods", "measured (s)", "reference (s)", "verdict", title="bound to Running")
    for t in life.timing:
        timing.add_row(t.figure, str(t.pods), _num(t.value), _num(t.reference), _verdict(t.verdict))
    yield timing


def _codes(report: Report) -> Iterator[Table | str]:
    if not report.codes:
        return
    table = Table("component", "verb", "resource", "sub", "code", "count", "nodes",
                  title="answers other than 2xx to requests received in the window")
    for c in report.codes:
        table.add_row(c.component, c.verb, c.resource, c.subresource, str(c.code), str(c.count), _names(c.nodes))
    yield table
    refused = [f"{n.name} ({', '.join(f'{code} x{count}' for code, count in n.codes.items() if code == 429 or code >= 500)})"
               for n in report.node_rows if any(code == 429 or code >= 500 for code in n.codes)]
    if refused:
        yield f"nodes that got 429 or 5xx: {_names(refused)}"
