"""The README's settings tables, read as a user reads them."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def settings_table(containing: str) -> dict[str, str]:
    """The `| Variable | Default | Meaning |` table that documents `containing`: variable -> default cell."""
    tables: list[dict[str, str]] = []
    rows: dict[str, str] | None = None
    for line in README.read_text().splitlines():
        if line.startswith("| Variable | Default |"):
            rows = {}
            tables.append(rows)
        elif rows is not None and line.startswith("| `"):
            variable, default = (cell.strip() for cell in line.strip("|").split("|")[:2])
            rows[variable.strip("`")] = default
        elif not line.startswith("|"):
            rows = None
    [table] = [t for t in tables if containing in t]
    return table


def literal(cell: str) -> str | None:
    """A default written as code (`0.043`) is a value to check; prose ("required", "all") is not."""
    return cell.strip("`") if cell.startswith("`") and cell.endswith("`") else None
