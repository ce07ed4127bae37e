"""A test certificate authority, made with openssl: server certificates for 127.0.0.1 (or for another
host), client certificates, and the TLS contexts servers use with them."""

from __future__ import annotations

import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Authority:
    folder: Path

    @property
    def cert(self) -> Path:
        return self.folder / "ca.crt"

    @classmethod
    def make(cls, folder: Path, name: str = "resonance-test-ca") -> Authority:
        folder.mkdir(parents=True, exist_ok=True)
        new_key = ["-newkey", "rsa:2048", "-nodes", "-keyout", str(folder / "ca.key")]
        _openssl(
            "req", "-x509", *new_key, "-out", str(folder / "ca.crt"), "-days", "2", "-subj", f"/CN={name}"
        )
        return cls(folder)

    def issue(
        self, name: str, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"), client: bool = False
    ) -> Pair:
        """A certificate for hosts (server), or for a client."""
        key, csr, cert = (self.folder / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(csr),
            "-subj",
            f"/CN={name}",
        )
        extensions = self.folder / f"{name}.ext"
        if client:
            extensions.write_text("extendedKeyUsage = clientAuth\n")
        else:
            names = ",".join(f"IP:{h}" if h[0].isdigit() else f"DNS:{h}" for h in hosts)
            extensions.write_text(f"subjectAltName = {names}\nextendedKeyUsage = serverAuth\n")
        signing = ["-CA", str(self.cert), "-CAkey", str(self.folder / "ca.key"), "-CAcreateserial"]
        _openssl(
            "x509",
            "-req",
            "-in",
            str(csr),
            *signing,
            "-out",
            str(cert),
            "-days",
            "2",
            "-extfile",
            str(extensions),
        )
        return Pair(cert, key)

    def server_context(self, pair: Pair, require_client: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(pair.cert, pair.key)
        if require_client:
            context.load_verify_locations(self.cert)
            context.verify_mode = ssl.CERT_REQUIRED
        return context
