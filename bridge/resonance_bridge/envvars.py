"""Settings from environment variables: each read and checked, every problem collected (not the first
raised), each naming the variable, the value and the fix. Pure: a mapping in, values and problems out."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

TOPIC_RE = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")


@dataclass(frozen=True, slots=True)
class Problem:
    """One bad variable: what was given, what is wrong, and the fix."""

    variable: str
    value: str | None  # as given; None when missing
    what: str  # e.g. "is invalid", "is required"
    fix: str

    def __str__(self) -> str:
        given = self.variable if self.value is None else f"{self.variable}={self.value!r}"
        return f"{given} {self.what}: {self.fix}"


class ConfigError(Exception):
    """Invalid configuration; `problems` holds one Problem per bad variable."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(map(str, problems)))
        self.problems = problems


def var(name: str, default: Any = dataclasses.MISSING) -> Any:
    """A setting read from the environment variable `name`: its name and default are declared here
    once, and load(), the operator and the README table check (tests) read them from the field."""
    return dataclasses.field(default=default, metadata={"env": name})


def declared(cls: type) -> dict[str, tuple[str, Any]]:
    """Per field of a settings dataclass: (its environment variable, its default)."""
    return {f.name: (f.metadata["env"], f.default) for f in dataclasses.fields(cls) if "env" in f.metadata}


class EnvReader:
    """Reads typed variables from a mapping, recording a problem instead of raising."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[Problem] = []

    def _get(self, name: str, default: T, parse: Callable[[str], T], fix: str) -> T:
        raw = self.env.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            return parse(raw.strip())
        except ValueError:
            self.problems.append(Problem(name, raw, "is invalid", fix))
            return default

    def required(self, name: str, fix: str) -> str:
        raw = self.env.get(name, "").strip()
        if not raw:
            self.problems.append(Problem(name, None, "is required", fix))
        return raw

    def parsed(self, name: str, default: T, parse: Callable[[str], T], fix: str) -> T:
        """A variable of a type of the caller's: parse() raises ValueError for what it rejects."""
        return self._get(name, default, parse, fix)

    def text(self, name: str, default: str) -> str:
        return self._get(name, default, str, "")

    def topic(self, name: str, default: str = "", required: bool = False) -> str:
        fix = "use 1-249 characters of [a-zA-Z0-9._-], not '.' or '..'"
        value = (
            self.required(name, f"set a Kafka topic name ({fix})") if required else self.text(name, default)
        )
        if value and (not TOPIC_RE.match(value) or value in {".", ".."}):
            self.problems.append(Problem(name, value, "is not a legal Kafka topic name", fix))
        return value

    def number(
        self, name: str, default: float, low: float, high: float, fix: str, *, zero_ok: bool = False
    ) -> float:
        def parse(raw: str) -> float:
            value = float(raw)
            if not (low < value <= high or (zero_ok and value == low)):
                raise ValueError(raw)
            return value

        return self._get(name, default, parse, fix)

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        def parse(raw: str) -> int:
            value = int(raw)
            if not low <= value <= high:
                raise ValueError(raw)
            return value

        return self._get(name, default, parse, f"use a whole number from {low} to {high}")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        def parse(raw: str) -> str:
            if raw not in choices:
                raise ValueError(raw)
            return raw

        return self._get(name, default, parse, f"use one of: {', '.join(choices)}")

    def boolean(self, name: str, default: bool) -> bool:
        def parse(raw: str) -> bool:
            lowered = raw.lower()
            if lowered in {"true", "1", "yes", "on"}:
                return True
            if lowered in {"false", "0", "no", "off"}:
                return False
            raise ValueError(raw)

        return self._get(name, default, parse, "use true or false")
