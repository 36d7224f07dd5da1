"""The soak's table: the run, its dispatches, its faults, its checks, the API under the load."""

from datetime import datetime
from typing import Any

from bench.report import table
from soak.run import SoakResult


def soak_table(result: SoakResult, command: str) -> str:
    profile = result.profile
    parts = [
        f"Soak: {profile['minutes']:g} min, seed {result.seed}, {profile['workers']} workers "
        f"(SEND_CONCURRENCY {profile['send_concurrency']}), gateway {profile['latency_ms']:g}"
        f"+{profile['jitter_ms']:g} ms, {profile['users']} API users",
        f"  repeat: {command}",
        "",
        table(
            [
                ["dispatch", "id", "clients", "window", "messages"],
                *[_dispatch_row(d) for d in result.dispatches],
            ]
        ),
        "",
        table(
            [
                ["fault", "at", "what", "s", "outcome"],
                *[_fault_row(f, result.started_at) for f in result.faults],
            ]
        ),
        "",
        table(
            [
                ["check", "", "figure"],
                *[[c.name, "ok" if c.ok else "FAIL", c.figure] for c in result.checks],
            ]
        ),
        "",
        _api_table(result.api),
        "",
        "peak memory (MB): "
        + ", ".join(f"{name} {mb:g}" for name, mb in sorted(result.memory_mb.items())),
        f"drain after the load stopped: {result.drain_s} s; "
        f"started again at the end: {result.restarted_at_end or 'nothing'}",
        "reconciliation: "
        + ("; ".join(result.reconciliation) if result.reconciliation else "repaired nothing"),
    ]
    if result.errors:
        parts += ["", "errors:", *[f"  {error}" for error in result.errors]]
    parts += ["", "PASSED" if result.ok else "FAILED"]
    return "\n".join(parts)


def _dispatch_row(dispatch: dict[str, Any]) -> list[str]:
    body = dispatch["body"]
    window = body.get("window")
    shape = body.get("delivery", "cohorts")
    text = f"{window['start']}-{window['end']}" if window else "none"
    if dispatch.get("opens"):
        text += f", opens in {dispatch['opens'][0]} at {dispatch['opens'][1][11:16]}"
    if dispatch.get("closes"):
        text += f", closes in {dispatch['closes'][0]} at {dispatch['closes'][1][11:16]}"
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(dispatch["statuses"].items()))
    return [
        f"{dispatch['name']} ({shape})",
        str(dispatch["id"]),
        str(dispatch["clients"]),
        text,
        statuses,
    ]


def _fault_row(fault: dict[str, Any], started_at: str) -> list[str]:
    start = datetime.fromisoformat(started_at)
    at = datetime.fromisoformat(fault["started"])
    return [
        str(fault["index"]),
        f"+{(at - start).total_seconds():.0f} s",
        fault["what"],
        "" if fault["seconds"] is None else f"{fault['seconds']:g}",
        fault["outcome"]
        if fault["exit_code"] in (None, 0)
        else f"{fault['outcome']} ({fault['exit_code']})",
    ]


def _api_table(api: dict[str, Any]) -> str:
    if not api:
        return "API: no figures"
    rows = [["route", "requests", "statuses", "p50 ms", "p99 ms", "max ms"]]
    for route, figures in sorted(api["by_route"].items()):
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(figures["by_status"].items()))
        rows.append(
            [
                route,
                str(figures["count"]),
                statuses,
                f"{figures['p50_ms']:.0f}",
                f"{figures['p99_ms']:.0f}",
                f"{figures['max_ms']:.0f}",
            ]
        )
    head = (
        f"API: {api['requests']} requests, reads p50 {api['reads_p50_ms']:.0f} ms, "
        f"p99 {api['reads_p99_ms']:.0f} ms"
    )
    return head + "\n" + table(rows)
