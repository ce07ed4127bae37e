"""The operator-at-scale bench's tables (bench/operator_scale.py): one run's, and how the figures
grow from one run's node count to another's."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any


def markdown(r: dict[str, Any]) -> str:
    def listed(per: dict[str, float]) -> str:
        return ", ".join(f"{k} {v:g}" for k, v in per.items()) or "none"

    rss, cpu = r["operator_rss_mb"], r["cpu_s"]
    latency = ", ".join(f"{k} {v}" for k, v in r["change_ms"].items())
    lists = [k for k in {**r["api_calls_per_create"], **r["api_calls_per_change"]} if k.startswith("list ")]
    rows = {
        "nodes": f"{r['nodes']:,}",
        "time to all Deployments": f"{r['seconds_to_all_deployments']} s",
        "creates/s (first create to last Deployment)": r["creates_per_s"],
        "time to send the creates": f"{r['seconds_to_send_creates']} s",
        "operator peak RSS (VmHWM)": f"{r['operator_peak_rss_mb']} MB",
        "operator RSS before, converged, end": f"{rss['before']}, {rss['converged']}, {rss['end']} MB",
        "operator CPU to converge (until idle)": f"{cpu['operator']} s ({cpu['until_idle']} s)",
        "API server CPU to converge": f"{cpu['apiserver']} s",
        f"spec change, {r['changes']} one at a time": f"{latency} ms",
        "API calls per create": listed(r["api_calls_per_create"]),
        "API calls per change": listed(r["api_calls_per_change"]),
        "LIST calls in either phase": ", ".join(lists) or "none",
        "reconciles, status patches per create": listed(r["operator_counters_per_create"]),
        "reconciles, status patches per change": listed(r["operator_counters_per_change"]),
    }
    if "heartbeating" in r:
        h = r["heartbeating"]
        steady = f"{h['beats_per_s']} beats/s, steady state over {h['seconds_measured']} s"
        rows[f"heartbeating ({steady}): operator CPU"] = f"{h['operator_cpu_percent']}% of a core"
        rows["heartbeating: status patches/s (bound: one per node per period, 50/s in all)"] = (
            f"{h['status_patches_per_s']} ({h['status_patches_bound_per_s']}); by trigger: "
            + listed(h["status_patches_by_trigger_per_s"])
        )
        rows["heartbeating: operator RSS"] = f"{h['operator_rss_mb']} MB"
    if "restart" in r:
        again = r["restart"]
        rows[f"operator restarted under {r['nodes']:,} nodes: peak RSS, idle after"] = (
            f"{again['peak_rss_mb']} MB, {again['seconds_to_idle']} s"
        )
    return "| measure | value |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows.items())


def slope(small: dict[str, Any], big: dict[str, Any]) -> str:
    """How the figures grow from one run's node count to another's: per node added."""
    added = big["nodes"] - small["nodes"]
    rows: list[tuple[str, Callable[[dict[str, Any]], float], str]] = [
        ("time to all Deployments", lambda r: r["seconds_to_all_deployments"] * 1000, "ms"),
        ("operator CPU to converge", lambda r: r["cpu_s"]["operator"] * 1000, "ms"),
        ("API server CPU to converge", lambda r: r["cpu_s"]["apiserver"] * 1000, "ms"),
        ("operator peak RSS", lambda r: r["operator_peak_rss_mb"] * 1024, "KB"),
        ("operator CPU heartbeating (% of a core)", lambda r: r["heartbeating"]["operator_cpu_percent"], "%"),
        ("operator RSS heartbeating", lambda r: r["heartbeating"]["operator_rss_mb"] * 1024, "KB"),
    ]
    head = f"| measure | {small['nodes']:,} nodes | {big['nodes']:,} nodes | per node added |\n"
    head += "|---|---:|---:|---:|\n"
    lines = []
    for name, value, unit in rows:
        with contextlib.suppress(KeyError):
            a, b = value(small), value(big)
            shown = (f"{a / 1024:.1f} MB", f"{b / 1024:.1f} MB") if unit == "KB" else (f"{a:g}", f"{b:g}")
            if unit == "ms":
                shown = (f"{a / 1000:.1f} s", f"{b / 1000:.1f} s")
            per_node = (b - a) / added
            lines.append(
                f"| {name} | {shown[0]} | {shown[1]} | {per_node:.4g} {unit if unit != '%' else 'points'} |\n"
            )
    return head + "".join(lines)
