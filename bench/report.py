"""The bench's output: machine facts, the JSON files in bench/results, the table on stdout."""

import dataclasses
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from bench.actions import KINDS as ACTION_KINDS
from bench.actions import USD_PER_MILLION_ACTIONS
from bench.failover import failover_lines
from bench.figures import (
    ActionFigures,
    BenchReport,
    CeilingFigures,
    Delays,
    DispatchFigures,
    HistoryFigures,
    RemoteFigures,
    RouteShare,
    ZoneRunFigures,
)
from bench.outage import outage_lines
from bench.receipts import receipt_lines
from core.settings import PROJECT_ROOT
from devstack.embedded import bin_path

RESULTS_DIR = PROJECT_ROOT / "bench" / "results"


def _command_output(command: list[str]) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine_facts() -> dict[str, Any]:
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_mb": int(psutil.virtual_memory().total // (1024 * 1024)),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "temporal": _command_output([bin_path("temporal"), "--version"]),
        # Read-only: which code was measured (uncommitted changes are not told apart).
        "commit": _command_output(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"]),
    }


def write_results(report: BenchReport, directory: Path = RESULTS_DIR) -> list[Path]:
    """latest.json and a timestamped copy; returns both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(dataclasses.asdict(report), indent=2, default=str) + "\n"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    paths = [directory / "latest.json", directory / f"bench-{stamp}.json"]
    for path in paths:
        path.write_text(text)
    return paths


# The table


def table(rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def _num(value: float | int | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        text = f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
    else:
        text = str(value)
    return f"{text}{unit}"


def _delays(delays: Delays) -> str:
    if not delays.count:
        return "-"
    return f"{_num(delays.p50_s)} / {_num(delays.p99_s)} / {_num(delays.max_s)} s"


def _history(history: HistoryFigures) -> str:
    size = history.largest
    if size is None:
        return "-"
    return (
        f"{size.history_length} ev, {size.history_size_bytes / 1024:.0f} KiB ({size.workflow_id})"
    )


def _remote(remote: RemoteFigures) -> str:
    return f"{remote.accepted} accepted, {remote.duplicates} dup"


def _statuses(statuses: dict[str, int]) -> str:
    return ", ".join(f"{status} {count}" for status, count in sorted(statuses.items())) or "-"


def _rss(peaks: dict[str, float], name: str) -> str:
    return _num(peaks.get(name), " MB")


def _worker_rss(peaks: dict[str, float]) -> str:
    """Each worker process's peak, in order (`worker` alone: a report of one worker)."""
    names = sorted(
        (name for name in peaks if name == "worker" or name.startswith("worker-")),
        key=lambda name: int(name.partition("-")[2] or 0),
    )
    if not names:
        return "-"
    return " / ".join(_num(peaks[name]) for name in names) + " MB"


def _rate(result: DispatchFigures, rate: float | None) -> str:
    return "(timeout)" if result.timed_out else _num(rate)


def _share(result: DispatchFigures, index: int) -> str:
    if index >= len(result.workers):
        return ""
    share = result.workers[index]
    if share.sent is None:
        return "(not read)"
    return f"{share.sent} ({_num(share.share_pct, ' %')})"


def _route_share(result: DispatchFigures, index: int) -> str:
    if index >= len(result.routes):
        return "(default)" if not result.routes and index == 0 else ""
    share = result.routes[index]
    return (
        f"{share.route}: {share.accepted} ({_num(share.share_pct, ' %')}), "
        f"{share.duplicates} dup, {share.sent} sent"
    )


def _scale(result: DispatchFigures) -> str:
    if result.scale_vs_one_worker is None:
        return "-"
    return f"{result.scale_vs_one_worker:.2f}x (vs #{result.one_worker_dispatch_id})"


def _action_rows(results: Sequence[DispatchFigures]) -> list[list[str]]:
    """Totals, per 1,000 messages, USD per million messages, then each kind's count."""
    actions = [r.actions for r in results]

    def cells(cell: Callable[[ActionFigures], str]) -> list[str]:
        return [cell(a) if a is not None else "-" for a in actions]

    kinds = [k for k in ACTION_KINDS if any(a is not None and k in a.by_kind for a in actions)]
    rows = [
        ["actions (histories + heartbeats)", *cells(lambda a: str(a.total))],
        ["actions / 1,000 messages", *cells(lambda a: _num(a.per_1000_messages))],
        [
            f"USD / million messages (at ${USD_PER_MILLION_ACTIONS:g}/M actions)",
            *cells(lambda a: _num(a.usd_per_million_messages)),
        ],
    ]
    for kind in kinds:
        rows.append([f"  {kind}", *(str(a.by_kind.get(kind, 0)) if a else "-" for a in actions)])
    exempt = sorted({kind for a in actions if a is not None for kind in a.not_billed})
    for kind in exempt:
        rows.append(
            [
                f"  (not billed) {kind}",
                *(str(a.not_billed.get(kind, 0)) if a else "-" for a in actions),
            ]
        )
    rows += [
        ["  heartbeats from", *cells(lambda a: a.heartbeats_method)],
        ["  heartbeats estimated (histories)", *cells(lambda a: str(a.heartbeats_estimate))],
        ["  runs / events read", *cells(lambda a: f"{a.runs} / {a.events}")],
        [
            "server action metric (total, /1,000)",
            *cells(
                lambda a: (
                    "(unavailable)"
                    if a.server_total is None
                    else f"{a.server_total}, {_num(a.server_per_1000_messages)}"
                )
            ),
        ],
    ]
    return rows


def dispatch_table(results: Sequence[DispatchFigures]) -> str:
    header = ["", *(f"#{r.dispatch_id}" for r in results)]
    rows: list[list[str]] = [
        ["scenario", *(r.scenario.name for r in results)],
        ["clients", *(str(r.scenario.clients) for r in results)],
        ["latency", *(f"{r.scenario.latency_ms:g} ms" for r in results)],
        ["shape asked", *(r.scenario.shape or "(not sent)" for r in results)],
        ["delivery (API)", *(r.delivery or "(no field)" for r in results)],
        ["result", *("completed" if r.completed else "TIMEOUT" for r in results)],
        ["elapsed", *(_num(r.elapsed_s, " s") for r in results)],
        ["messages/s (POST->completed)", *(_rate(r, r.messages_per_s) for r in results)],
        ["messages/s (database)", *(_rate(r, r.db_messages_per_s) for r in results)],
        ["statuses", *(_statuses(r.statuses) for r in results)],
        ["delay p50 / p99 / max", *(_delays(r.delays) for r in results)],
        ["largest history", *(_history(r.history) for r in results)],
        ["most events in a run", *(_num(r.history.longest_events) for r in results)],
        ["workflow runs", *(_num(r.history.executions) for r in results)],
        ["dispatch runs", *(_num(r.history.parent_runs) for r in results)],
        ["peak RSS workers", *(_worker_rss(r.peak_rss_mb) for r in results)],
        ["peak RSS API", *(_rss(r.peak_rss_mb, "api") for r in results)],
        ["peak RSS temporal", *(_rss(r.peak_rss_mb, "temporal") for r in results)],
        ["remote", *(_remote(r.remote) for r in results)],
        ["client insert (COPY)", *(_num(r.insert_s, " s") for r in results)],
        ["workers", *(str(r.scenario.workers) for r in results)],
    ]
    most = max((len(r.workers) for r in results), default=0)
    rows += [
        [f"  worker-{i + 1} sent (share)", *(_share(r, i) for r in results)] for i in range(most)
    ]
    most_routes = max((len(r.routes) for r in results), default=0)
    if most_routes:
        rows += [
            [
                f"  route {i + 1}: accepted (share), dup, sent",
                *(_route_share(r, i) for r in results),
            ]
            for i in range(most_routes)
        ]
    rows += [
        ["max in flight at the gateway", *(str(r.remote.max_in_flight) for r in results)],
        ["scale vs 1 worker (messages/s)", *(_scale(r) for r in results)],
    ]
    if any(r.actions is not None for r in results):
        rows += _action_rows(results)
    return table([header, *rows])


def scale_lines(results: Sequence[DispatchFigures]) -> list[str]:
    return [
        f"scale: {r.scenario.workers} workers / 1 worker = {r.scale_vs_one_worker:.2f} "
        f"(#{r.dispatch_id} vs #{r.one_worker_dispatch_id}, {r.scenario.clients} clients at "
        f"{r.scenario.latency_ms:g} ms)"
        for r in results
        if r.scale_vs_one_worker is not None
    ]


def personal_lines(results: Sequence[DispatchFigures]) -> list[str]:
    """For the personal text's and the capped runs: their rates against the plain one's."""
    lines = []
    for r in results:
        if r.vs_plain is None:
            continue
        plain = next(x for x in results if x.dispatch_id == r.plain_dispatch_id)
        target = 0.85 if r.scenario.frequency_cap else 0.90
        lines.append(
            f"{r.scenario.name} / {plain.scenario.name} = {r.vs_plain:.2f} "
            f"(#{r.dispatch_id} vs #{plain.dispatch_id}: {_num(r.messages_per_s)} vs "
            f"{_num(plain.messages_per_s)} messages/s; target >= {target:.2f}: "
            f"{'met' if r.vs_plain >= target else 'NOT MET'})"
        )
    return lines


def route_lines(results: Sequence[DispatchFigures]) -> list[str]:
    """For each run with routes: its rate against the 1-route run, and its routes' parts."""
    lines = []
    for r in results:
        if not r.routes:
            continue
        if r.vs_one_route is not None:
            one = next(x for x in results if x.dispatch_id == r.one_route_dispatch_id)
            lines.append(
                f"routes: {r.scenario.name} / {one.scenario.name} = {r.vs_one_route:.2f} "
                f"(#{r.dispatch_id} vs #{one.dispatch_id}: {_num(r.messages_per_s)} vs "
                f"{_num(one.messages_per_s)} messages/s, {r.scenario.clients} clients, "
                f"{r.scenario.workers} worker(s))"
            )
        accepted = sum(share.accepted for share in r.routes)
        sent = sum(share.sent for share in r.routes)
        parts = "; ".join(
            f"{share.route} ({_serves(share)}): {share.accepted} at its gateway, "
            f"{share.sent} sent on it"
            for share in r.routes
        )
        adds_up = "add up" if accepted == sent == r.messages else "DO NOT add up"
        lines.append(
            f"  #{r.dispatch_id} per route: {parts}; {accepted} accepted and {sent} sent "
            f"{adds_up} to the dispatch's {r.messages} messages"
        )
    return lines


def _serves(share: RouteShare) -> str:
    parts = []
    for what, keys in (("codes", share.operator_codes), ("prefixes", share.prefixes)):
        if not keys:
            continue
        if len(keys) > 2 and int(keys[-1]) - int(keys[0]) == len(keys) - 1:
            parts.append(f"{what} {keys[0]}-{keys[-1]}")
        else:
            parts.append(f"{what} {', '.join(keys)}")
    return " and ".join(parts) or "everyone"


def action_notes(results: Sequence[DispatchFigures]) -> list[str]:
    notes = [
        f"  #{r.dispatch_id}: {r.actions.note}"
        for r in results
        if r.actions is not None and r.actions.note
    ]
    if not any(r.actions is not None for r in results):
        return notes
    return [
        "Actions: what Temporal Cloud would bill, counted from every run of every workflow of "
        "the dispatch (rules in bench/actions.py; a child is 2: intent + start), heartbeats "
        "from the server's action counter; the server's own total includes queries and "
        "whatever else ran in the namespace meanwhile.",
        *notes,
    ]


def ceiling_lines(ceiling: CeilingFigures) -> list[str]:
    rate = (
        f"{_num(ceiling.children_per_s)} children/s"
        if ceiling.completed
        else f"TIMEOUT after {_num(ceiling.elapsed_s)} s"
    )
    parent = ceiling.largest_parent_history
    history = (
        "-"
        if parent is None
        else f"{parent.history_length} events, {parent.history_size_bytes / 1024:.0f} KiB"
    )
    return [
        f"Ceiling of one child per client ({ceiling.children} children, "
        f"{ceiling.latency_ms:g} ms remote, {ceiling.children_per_run} per parent run):",
        f"  {rate} ({_num(ceiling.elapsed_s)} s); largest parent run {history}; "
        f"remote {_remote(ceiling.remote)}",
    ]


def zone_lines(zones: ZoneRunFigures) -> list[str]:
    lines = [
        f"Zone run: {zones.clients} clients over {len(zones.zones)} zones, "
        f"{zones.latency_ms:g} ms remote, window {zones.window['start']}-"
        f"{zones.window['end']} local, opening in {zones.opening_zone} at {zones.opening_at}",
        f"  opening zone {'done' if zones.opening_zone_done else 'TIMEOUT'} after "
        f"{_num(zones.elapsed_s)} s; delay from opening p50/p99/max: "
        f"{_delays(zones.opening_delays)}",
        f"  immediate zones: delay from start {_delays(zones.immediate_delays)}; "
        f"{_num(zones.immediate_messages_per_s)} messages/s",
        f"  largest history {_history(zones.history)}; workflow runs "
        f"{_num(zones.history.executions)}; peak RSS workers {_worker_rss(zones.peak_rss_mb)}"
        f", API {_rss(zones.peak_rss_mb, 'api')}; remote {_remote(zones.remote)}; "
        f"deleted: {zones.deleted}",
    ]
    rows = [["zone", "kind", "opens at", "clients", "statuses", "delay p50 / p99 / max"]]
    for z in zones.zones:
        # Seconds are enough to read; the JSON keeps the full instant.
        opens = z.opens_at[:19].replace("T", " ") if z.opens_at else "-"
        counts = _statuses(z.statuses)
        rows.append([z.zone, z.kind, opens, str(z.clients), counts, _delays(z.delays)])
    lines += ["  " + line for line in table(rows).splitlines()]
    return lines


def http_lines(http: dict[str, Any]) -> list[str]:
    if "skipped" in http:
        return [f"HTTP clients: skipped ({http['skipped']})"]
    rows: list[list[str]] = []
    for latency, clients in http["by_latency_ms"].items():
        for client, figures in clients.items():
            if not isinstance(figures, dict):  # an error message instead of figures
                rows.append([f"{latency} ms", client, str(figures)])
                continue
            if not rows:
                rows.append(["latency", "client", *figures])
            rows.append([f"{latency} ms", client, *(_num(value) for value in figures.values())])
    title = f"HTTP clients ({http['requests']} requests, {http['connections']} connections):"
    if not rows:
        return [title, "  no figures"]
    width = max(len(row) for row in rows)
    padded = [row + [""] * (width - len(row)) for row in rows]
    return [title, *("  " + line for line in table(padded).splitlines())]


def audience_lines(audience: Any) -> list[str]:
    """bench.audience.AudienceFigures as lines."""
    report = audience.import_report
    lines = [
        f"Audience: import of {audience.rows:,} CSV rows ({audience.file_mb} MB) through "
        f"POST /api/v1/clients/import: {audience.import_s} s, "
        f"{audience.import_rows_per_s:,} rows/s",
        f"  created {report.get('created')}, updated {report.get('updated')}, skipped "
        f"{report.get('skipped')}, rejected {report.get('rejected')}; API RSS "
        f"{audience.api_rss_before_mb} MB before, {audience.api_peak_rss_mb} MB at its peak",
        f"  {audience.messages:,} messages in the database afterwards (inserted by SQL in "
        f"{audience.messages_insert_s} s); reads over HTTP, {audience.latencies[0].requests} "
        "each:"
        if audience.latencies
        else "",
    ]
    rows = [["read", "p50 ms", "p95 ms", "max ms"]]
    rows += [[x.name, _num(x.p50_ms), _num(x.p95_ms), _num(x.max_ms)] for x in audience.latencies]
    lines += ["  " + line for line in table(rows).splitlines()]
    for lock in audience.locks:
        slowest = ", ".join(f"{name} {ms} ms" for name, ms in lock.probe.max_ms.items())
        lines.append(
            f"  {lock.action} ({lock.messages:,} messages): HTTP {lock.status_code} in "
            f"{lock.elapsed_s} s; meanwhile, slowest of {lock.probe.statements} probes: {slowest}"
        )
    return lines


def render(report: BenchReport) -> str:
    machine = report.machine
    lines = [
        f"Bench {report.started_at} .. {report.finished_at}",
        f"Machine: {machine['nproc']} cpus ({machine['cpu_model']}), "
        f"{machine['memory_mb']} MB, Python {machine['python']}, {machine['temporal']}",
        f"Stack: {report.stack['restarts']}",
        "",
    ]
    if report.http_clients is not None:
        lines += [*http_lines(report.http_clients), ""]
    if report.ceiling is not None:
        lines += [*ceiling_lines(report.ceiling), ""]
    if report.dispatches:
        lines += ["Dispatches to every client:", dispatch_table(report.dispatches)]
        lines += [
            *scale_lines(report.dispatches),
            *route_lines(report.dispatches),
            *personal_lines(report.dispatches),
        ]
        lines += [*action_notes(report.dispatches), ""]
    if report.outage is not None:
        lines += [*outage_lines(report.outage), ""]
    for failover in report.failovers:
        lines += [*failover_lines(failover), ""]
    if report.receipts is not None:
        lines += [*receipt_lines(report.receipts), ""]
    if report.zones is not None:
        lines += [*zone_lines(report.zones), ""]
    if report.audience is not None:
        lines += [*audience_lines(report.audience), ""]
    lines += [f"ERROR: {error}" for error in report.errors]
    return "\n".join(lines) + "\n"


def write_table(report: BenchReport) -> None:
    sys.stdout.write(render(report))
    sys.stdout.flush()
