"""The bridge's Prometheus metrics without prometheus_client: counters, gauges and an info metric in a
registry of its own, written in the text exposition format (0.0.4) exactly as prometheus_client
writes it (a test holds the two to the same bytes).

Why not the library: importing it costs an idle bridge 4.4 MB of its ~34 MB (it pulls in http.server,
urllib, email and wsgiref for servers the bridge does not run), and each increment takes a lock.
The bridge's loop is single-threaded; a scrape reads the values on that same loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LABELS = tuple[str, ...]


class Collector(Protocol):
    def lines(self) -> Iterator[str]:
        """Its HELP, TYPE and sample lines."""
        ...


def number(value: float) -> str:
    """As Go (and prometheus_client) writes a float."""
    value = float(value)
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    text = repr(value)
    dot = text.find(".")
    if value > 0 and dot > 6:  # Go switches to an exponent sooner than Python
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+0{dot - 1}"
    return text


def labelled(names: Iterable[str], values: Iterable[str]) -> str:
    """`{k="v",...}` sorted by name, as prometheus_client writes them."""
    pairs = [f'{k}="{_escape(v)}"' for k, v in sorted(zip(names, values, strict=True))]
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def head(name: str, doc: str, kind: str) -> Iterator[str]:
    yield "# HELP " + name + " " + doc.replace("\\", r"\\").replace("\n", r"\n")
    yield f"# TYPE {name} {kind}"


class Value:
    """One series: a number, or a function read at scrape time."""

    __slots__ = ("function", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.function: Callable[[], float] | None = None

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def set(self, value: float) -> None:
        self.value = float(value)

    def set_function(self, function: Callable[[], float]) -> None:
        self.function = function

    def get(self) -> float:
        return float(self.function()) if self.function is not None else self.value


class Metric(Value):
    """A counter or a gauge; with label names, its series come from labels(). Unlabelled, it is its
    one series itself."""

    kind = "gauge"
    suffix = ""

    def __init__(
        self, name: str, doc: str, labelnames: Iterable[str] = (), registry: Registry | None = None
    ) -> None:
        super().__init__()
        self.name, self.doc, self.labelnames = name + self.suffix, doc, tuple(labelnames)
        self.series: dict[LABELS, Value] = {}
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str) -> Value:
        key = tuple(str(v) for v in values)
        if len(key) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, not {key}")
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = Value()
        return series

    def remove(self, *values: str) -> None:
        del self.series[tuple(str(v) for v in values)]

    def samples(self) -> Iterator[tuple[LABELS, float]]:
        if not self.labelnames:
            yield (), self.get()
        for key, series in list(self.series.items()):
            yield key, series.get()

    def lines(self) -> Iterator[str]:
        yield from head(self.name, self.doc, self.kind)
        for key, value in self.samples():
            yield f"{self.name}{labelled(self.labelnames, key)} {number(value)}"


class Counter(Metric):
    kind, suffix = "counter", "_total"


class Gauge(Metric):
    pass


class Info(Metric):
    """A constant 1 whose labels say something (prometheus_client's Info)."""

    suffix = "_info"

    def info(self, values: dict[str, str]) -> None:
        self.labelnames = tuple(sorted(values))
        self.series = {tuple(values[k] for k in self.labelnames): Value()}
        next(iter(self.series.values())).set(1.0)

    def samples(self) -> Iterator[tuple[LABELS, float]]:
        yield from ((key, series.get()) for key, series in self.series.items())


class Registry:
    def __init__(self) -> None:
        self.collectors: list[Collector] = []

    def register(self, collector: Collector) -> None:
        self.collectors.append(collector)

    def exposition(self) -> bytes:
        return "".join(line + "\n" for c in self.collectors for line in c.lines()).encode()

    def get_sample_value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """One series' value (a counter's by its _total name), or None."""
        for metric in self._named(name):
            for key, value in metric.samples():
                if dict(zip(metric.labelnames, key, strict=True)) == (labels or {}):
                    return value
        return None

    def total(self, name: str) -> float:
        """The sum of a metric's series (a counter's by its _total name)."""
        return sum(value for metric in self._named(name) for _, value in metric.samples())

    def _named(self, name: str) -> Iterator[Metric]:
        return (c for c in self.collectors if isinstance(c, Metric) and c.name == name)
