"""A local S3 server (moto) and a broker that keeps its topics and committed offsets there, so that it
can be restarted with its data, as a real Kafka broker is."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from resonance_local.embedded import EmbeddedBroker, free_port

BUCKET = "tansu"


class PersistentBroker(EmbeddedBroker):
    # tansu on S3 reads one object per record batch; a fetch that takes longer than its wait
    # answers empty (an embedded-broker quirk), so its clients wait longer than the usual 10 ms.
    fetch_max_wait_ms = 500


class S3Server:
    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115
        server = Path(sys.executable).with_name("moto_server")
        self.process = subprocess.Popen(
            [str(server), "-H", "127.0.0.1", "-p", str(self.port)], stdout=log, stderr=log
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                assert self.process.poll() is None, self.log_path.read_text()
                assert time.monotonic() < deadline, f"moto did not listen within {timeout}s"
                time.sleep(0.1)
        # moto accepts unsigned requests: a plain PUT creates the bucket.
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/{BUCKET}", method="PUT"), timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def broker(self, log_path: Path) -> PersistentBroker:
        """A broker on this server's bucket; start() it again on the same port to restart it."""
        return PersistentBroker(
            log_path=log_path,
            storage=f"s3://{BUCKET}/",
            env={
                "AWS_ACCESS_KEY_ID": "resonance",
                "AWS_SECRET_ACCESS_KEY": "resonance",
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ENDPOINT": self.url,
                "AWS_ALLOW_HTTP": "true",
            },
        )
