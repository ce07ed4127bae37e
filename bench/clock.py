"""What every benchmark process shares: the records, and snapshots of time and CPU.

A snapshot is taken by the process that sees an event (the first record in, the last ack) at that
moment: time.monotonic() (one clock for all processes on Linux) and the CPU seconds so far of the
processes it watches, read from /proc. It is printed as one JSON line for the orchestrator.
"""

from __future__ import annotations

import json
import os
import re
import resource
import sys
import time
from typing import Any

ANCHOR = "BOLZANO_71"
RECORD_BYTES = 1024
_TICK = os.sysconf("SC_CLK_TCK")


def _template(stamped: bool) -> bytes:
    """A guide-format state_update padded to ~RECORD_BYTES: `%d` is its seq (and first its stamp)."""
    head = '{"type": "state_update", "t": %d, ' if stamped else '{"type": "state_update", '
    body = (
        '"timestamp": "2026-01-13T02:00:00+00:00", "anchor": "' + ANCHOR + '", "data": {"frequency": 0.043, '
        '"s_roi": 0.502, "status": "operational", "seq": %d, "message": "MSG"}}'
    )
    text = head + body
    filler = ("resonance " * 120)[: RECORD_BYTES - len(text.replace("%d", "123456")) + 3]
    return text.replace("MSG", filler).encode()


_PLAIN, _STAMPED = _template(False), _template(True)


def record(seq: int) -> bytes:
    return _PLAIN % seq


def stamped(seq: int) -> bytes:
    """A record carrying its send time (monotonic ns) near its head, for latency runs."""
    return _STAMPED % (time.monotonic_ns(), seq)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads); 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def memory_mb(pid: int, field: str = "VmHWM") -> float:
    """VmHWM (peak resident set) or VmRSS (now) of a process, in MiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for pid {pid}")


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Watch:
    """The pids a process snapshots: listed (`1,2`), or read from a file when an event happens
    (`@path`), for a relay spawned after the peer that watches it."""

    def __init__(self, spec: str = "") -> None:
        self.spec = spec

    def pids(self) -> list[int]:
        text = self.spec
        if text.startswith("@"):
            try:
                with open(text[1:]) as listed:
                    text = listed.read()
            except OSError:
                text = ""
        return [int(pid) for pid in text.replace(",", " ").split()]


def emit(event: str, watch: Watch | None = None, **fields: Any) -> None:
    cpu = {str(pid): cpu_seconds(pid) for pid in (watch.pids() if watch else [])}
    line = {"event": event, "t": time.monotonic(), "cpu": cpu, "own_cpu": own_cpu(), **fields}
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


_STAMP = re.compile(rb'"t"\s*:\s*(\d+)')


def stamp(head: bytes) -> int | None:
    """The send time a stamped record carries."""
    found = _STAMP.search(head, 0, 100)
    return int(found.group(1)) if found else None


def percentiles(delays_ns: list[int]) -> dict[str, float]:
    if not delays_ns:
        return {}
    ordered = sorted(delays_ns)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6

    return {"p50_ms": at(0.50), "p99_ms": at(0.99), "max_ms": ordered[-1] / 1e6, "samples": len(ordered)}
