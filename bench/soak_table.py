"""The soak results (one JSON line per fault, from `make soak`) as the README's Guarantees table."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def table(lines: list[str]) -> str:
    rows = [
        "| Fault | Direction | Sent | Delivered | Lost | Duplicated | Recovered in | Notes |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for line in lines:
        r = json.loads(line)
        recovered = "-" if r["recover_s"] is None else f"{r['recover_s']:.1f} s"
        rows.append(
            f"| {r['fault']} | {r['direction']} | {r['sent']} | {r['delivered']} | {r['lost']} "
            f"| {r['duplicated']} | {recovered} | {r['note']} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    print(table([line for line in Path(sys.argv[1]).read_text().splitlines() if line.strip()]))
