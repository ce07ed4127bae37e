"""A contender for bench/relay.py: the same outbound relay as bench/baseline_relay.py, done by mq-bridge
(a Rust engine: librdkafka for Kafka, tokio-websockets for the WebSocket, no Python per message).

  out: a route `kafka` (consumer group, earliest, offsets committed per batch) -> `websocket` (client)

Only `out`: mq-bridge's WebSocket input is a server (it listens for the node to connect), and no other
endpoint reads frames as a WebSocket client, so `in` (the relay connecting to the node) cannot be built.

Kafka settings as in baseline_relay.py, passed to librdkafka: fetch.wait.max.ms, session timeout
1000 ms / heartbeat 200 ms, auto.offset.reset=earliest, enable.auto.commit off (mq-bridge's own),
max.partition.fetch.bytes. What differs: the engine commits each batch's offsets (async, batches of
up to 512) once the batch is written to the WebSocket, where the baseline never commits (no option
turns that off); librdkafka prefetches up to queued.max.messages.kbytes (64 MB), so the peak RSS
grows with the backlog (kept: a 2 MB queue cut the rate to ~3k msg/s on tansu); a payload that is
not valid UTF-8 goes out as a BINARY frame. The node's acks are read and dropped, as in the baseline.
Needs `pip install mq-bridge==1.2.0`, which the project does not depend on.

    python bench/mq_bridge_relay.py out --bootstrap HOST:PORT --topic T --group G --endpoint ws://...
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import Any

import mq_bridge  # type: ignore[import-not-found,unused-ignore]

MAX_FRAME = 1024 * 1024  # the bridge's default RESONANCE_MAX_FRAME_BYTES
OVERHEAD = 64 * 1024  # and its slack for keys, headers and batch framing


def outbound(args: argparse.Namespace) -> dict[str, Any]:
    """The route: records' values go out unchanged; a valid UTF-8 payload is sent as a TEXT frame."""
    consumer_options = {
        "fetch.wait.max.ms": args.fetch_max_wait_ms,
        "session.timeout.ms": 1000,
        "heartbeat.interval.ms": 200,
        "auto.offset.reset": "earliest",
        "max.partition.fetch.bytes": MAX_FRAME + OVERHEAD,
    }
    kafka = {
        "url": args.bootstrap,
        "topic": args.topic,
        "group_id": args.group,  # without one mq-bridge subscribes from the latest offset
        "consumer_options": [[key, str(value)] for key, value in consumer_options.items()],
    }
    return {"input": {"kafka": kafka}, "output": {"websocket": {"url": args.endpoint}}}


def main(args: argparse.Namespace) -> None:
    # The engine's warnings and errors go to stderr like the other relays' (bench/relay.py scans for them).
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    mq_bridge.init_logging("warn")
    # A named route, so that its log lines say which; unnamed ones get a random name.
    route = mq_bridge.Route.from_config({"routes": {"mq-bridge-relay": outbound(args)}}, "mq-bridge-relay")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    route.start()  # runs on the engine's threads; raises here if the config or a connection is bad
    try:
        stop.wait()  # the main thread only waits, so that Python's signal handlers can run
    finally:
        route.stop()  # stops reading, lets in-flight batches finish and commit
        route.join()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("direction", choices=("out",))
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--group", default="resonance-bench-mq-bridge")
    parser.add_argument("--fetch-max-wait-ms", type=int, default=10)
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse())
