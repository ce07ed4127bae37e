"""`resonance bridge` (or `python -m resonance_bridge`): one bridge process, configured by its
environment, with its health server and signal handling. Mirrors resonance_operator.main."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Mapping

from . import config as configuration
from . import logs
from .bridge import Bridge
from .health import HealthServer
from .listener import ListenUnavailable

log = logging.getLogger("resonance")


def run(env: Mapping[str, str]) -> int:
    """The bridge's exit code: 0 after a clean stop, 2 for a configuration it cannot run with."""
    try:
        config = configuration.load(env)
    except configuration.ConfigError as exc:
        for problem in exc.problems:
            print(f"resonance bridge: {problem}", file=sys.stderr)
        return 2
    logs.CONTEXT.update(node=config.node, anchor=config.anchor)  # in every JSON log line
    logs.header(config.auth_header)  # its value is the token, whatever the header's name
    return asyncio.run(_main(config))


async def _main(config: configuration.Config) -> int:
    bridge = Bridge(config)
    # What is alive now (the modules, the configuration: ~30,000 objects) lives as long as the
    # process: out of the collector's sight, so a full collection looks only at what came after.
    gc.freeze()
    health = HealthServer(bridge.metrics.registry, bridge.readiness)
    try:
        port = await health.start(config.http_port, config.http_host)
    except OSError as exc:
        print(
            f"resonance bridge: RESONANCE_HTTP_PORT={config.http_port} on {config.http_host} cannot be used "
            f"({exc.strerror}): choose a free port, or an address of this machine in RESONANCE_HTTP_HOST",
            file=sys.stderr,
        )
        return 2
    log.info("bridge %s: %s <-> %s (health and metrics on :%d)", config.node, config.topic, config.peer, port)
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()

    def on_signal() -> None:
        if main is None:
            return
        if bridge.stopping.is_set():
            main.cancel()  # a second signal: stop waiting for acks
            return
        bridge.stop()
        # Every closing step is bounded; this is the backstop that keeps the promise regardless,
        # within the pod's terminationGracePeriodSeconds (config.termination_grace_seconds).
        loop.call_later(config.shutdown_grace_s + configuration.CLOSE_BUDGET_S + 1, main.cancel)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        await bridge.run()
    except ListenUnavailable as exc:
        print(f"resonance bridge: {exc}", file=sys.stderr)
        return 2
    except asyncio.CancelledError:
        log.warning("bridge %s: shutdown cut short; unacked records will be redelivered", config.node)
        return 1
    finally:
        await health.close()
    log.info("bridge %s stopped cleanly", config.node)
    return 0
