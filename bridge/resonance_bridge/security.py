"""TLS and credentials, both sides: checked at start (a bad combination or an unusable file is a
configuration error, one line each), then turned into what websockets and aiokafka take. Python's
`ssl` and aiokafka's own settings: nothing reinvented.

Secrets come from files (mounted Secrets): the node's token is read again at every connection, so a
rotated Secret takes effect without a restart; the Kafka password at every client start.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError

from . import backoff, logs
from .envvars import Problem

if TYPE_CHECKING:
    from .config import Config, KafkaSecurity

log = logging.getLogger("resonance.bridge")
HEADER = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header name (RFC 9110 token)


def _file(problems: list[Problem], variable: str, path: str, what: str) -> bool:
    if not path:
        return False
    if not Path(path).is_file():
        problems.append(
            Problem(variable, path, "names no readable file", f"mount {what} there, or fix the path")
        )
        return False
    return True


def _ca(problems: list[Problem], variable: str, path: str) -> None:
    if _file(problems, variable, path, "a PEM bundle of CA certificates"):
        try:
            ssl.create_default_context(cafile=path)
        except (ssl.SSLError, ValueError, OSError) as exc:
            problems.append(
                Problem(
                    variable, path, "holds no usable certificate", f"put PEM CA certificates in it ({exc})"
                )
            )


def _pair(problems: list[Problem], cert_var: str, cert: str, key_var: str, key: str) -> None:
    if bool(cert) != bool(key):
        missing = key_var if cert else cert_var
        problems.append(
            Problem(missing, None, "is required", f"a client certificate needs both {cert_var} and {key_var}")
        )
        return
    if _file(problems, cert_var, cert, "the client certificate (PEM)") & _file(
        problems, key_var, key, "its key (PEM)"
    ):
        try:
            ssl.create_default_context().load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as exc:
            problems.append(
                Problem(
                    cert_var,
                    cert,
                    "does not load with its key",
                    f"use a PEM certificate and its PEM key ({exc})",
                )
            )


def problems(config: Config) -> list[Problem]:
    """Every problem with the TLS and credential settings, as configuration problems."""
    found: list[Problem] = []
    tls = config.tls_ca_file or config.tls_cert_file or config.tls_key_file or config.tls_insecure_skip_verify
    if tls and not config.endpoint.startswith("wss://"):
        found.append(
            Problem(
                "RESONANCE_ENDPOINT",
                config.endpoint,
                "is not wss://",
                "the RESONANCE_TLS_* settings need a wss:// endpoint",
            )
        )
    if config.tls_insecure_skip_verify and config.tls_ca_file:
        found.append(
            Problem(
                "RESONANCE_TLS_INSECURE_SKIP_VERIFY",
                "true",
                "contradicts RESONANCE_TLS_CA_FILE",
                "verify with the CA, or skip verifying: not both",
            )
        )
    _ca(found, "RESONANCE_TLS_CA_FILE", config.tls_ca_file)
    _pair(
        found, "RESONANCE_TLS_CERT_FILE", config.tls_cert_file, "RESONANCE_TLS_KEY_FILE", config.tls_key_file
    )
    if config.auth_token and config.auth_token_file:
        found.append(
            Problem("RESONANCE_AUTH_TOKEN", "***", "contradicts RESONANCE_AUTH_TOKEN_FILE", "set one of them")
        )
    _file(found, "RESONANCE_AUTH_TOKEN_FILE", config.auth_token_file, "the token")
    if not HEADER.match(config.auth_header):
        found.append(
            Problem(
                "RESONANCE_AUTH_HEADER",
                config.auth_header,
                "is no HTTP header name",
                "use e.g. Authorization or X-API-Key",
            )
        )
    return found + kafka_problems(config)


def listen_problems(config: Config) -> list[Problem]:
    """Every problem with a listening bridge's settings (listener.py)."""
    found: list[Problem] = []
    port = config.listen.rpartition(":")[2]
    if not port.isdigit() or int(port) > 65535:
        fix = "use host:port, e.g. 0.0.0.0:8765 (or :8765)"
        found.append(Problem("RESONANCE_LISTEN", config.listen, "is invalid", fix))
    if not config.listen_path.startswith("/"):
        found.append(Problem("RESONANCE_LISTEN_PATH", config.listen_path, "is invalid", "start it with /"))
    if not config.listen_token_file and not config.listen_anonymous:
        fix = "set RESONANCE_LISTEN_TOKEN_FILE (a file holding the token nodes present), or allow any node "
        found.append(
            Problem(
                "RESONANCE_LISTEN_TOKEN_FILE", "", "is not set", fix + "with RESONANCE_LISTEN_ANONYMOUS=true"
            )
        )
    _file(found, "RESONANCE_LISTEN_TOKEN_FILE", config.listen_token_file, "the token")
    cert, key = "RESONANCE_LISTEN_TLS_CERT_FILE", "RESONANCE_LISTEN_TLS_KEY_FILE"
    _pair(found, cert, config.listen_tls_cert_file, key, config.listen_tls_key_file)
    _ca(found, "RESONANCE_LISTEN_CLIENT_CA_FILE", config.listen_client_ca_file)
    if config.listen_client_ca_file and not config.listen_tls_cert_file:
        fix = "mutual TLS needs the server's own certificate: set it and its key"
        found.append(Problem(cert, None, "is required", fix))
    dialling = [v for v, set_ in (("RESONANCE_AUTH_TOKEN", config.auth_token), ("RESONANCE_AUTH_TOKEN_FILE",
        config.auth_token_file), ("RESONANCE_TLS_CA_FILE", config.tls_ca_file), ("RESONANCE_TLS_CERT_FILE",
        config.tls_cert_file)) if set_]  # fmt: skip
    for variable in dialling:
        found.append(
            Problem(variable, None, "is for dialling a node", "a listening bridge reads RESONANCE_LISTEN_*")
        )
    return found + kafka_problems(config)


def kafka_problems(config: KafkaSecurity) -> list[Problem]:
    """Every problem with the KAFKA_* security settings (the bridge's, and the operator's own)."""
    found: list[Problem] = []
    protocol, sasl = config.kafka_security_protocol, config.kafka_security_protocol.startswith("SASL_")
    if config.kafka_sasl_mechanism and not sasl:
        found.append(
            Problem(
                "KAFKA_SASL_MECHANISM",
                config.kafka_sasl_mechanism,
                f"needs a SASL protocol, not {protocol}",
                "set KAFKA_SECURITY_PROTOCOL=SASL_SSL (or SASL_PLAINTEXT)",
            )
        )
    if sasl:
        for variable, value in (
            ("KAFKA_SASL_MECHANISM", config.kafka_sasl_mechanism),
            ("KAFKA_SASL_USERNAME", config.kafka_sasl_username),
            ("KAFKA_SASL_PASSWORD_FILE", config.kafka_sasl_password_file),
        ):
            if not value:
                found.append(
                    Problem(variable, None, "is required", f"KAFKA_SECURITY_PROTOCOL={protocol} needs it")
                )
        _file(found, "KAFKA_SASL_PASSWORD_FILE", config.kafka_sasl_password_file, "the password")
    kafka_tls = config.kafka_ssl_ca_file or config.kafka_ssl_cert_file or config.kafka_ssl_key_file
    if kafka_tls and not protocol.endswith("SSL"):
        found.append(
            Problem(
                "KAFKA_SECURITY_PROTOCOL",
                protocol,
                "does not use TLS",
                "KAFKA_SSL_* files need SSL or SASL_SSL",
            )
        )
    _ca(found, "KAFKA_SSL_CA_FILE", config.kafka_ssl_ca_file)
    _pair(
        found,
        "KAFKA_SSL_CERT_FILE",
        config.kafka_ssl_cert_file,
        "KAFKA_SSL_KEY_FILE",
        config.kafka_ssl_key_file,
    )
    return found


def node_tls(config: Config) -> ssl.SSLContext | None:
    """The TLS context for a wss:// node: the system's CAs, or RESONANCE_TLS_CA_FILE's; a client
    certificate if given; no verification only if explicitly asked (and then warned about)."""
    if not config.endpoint.startswith("wss://"):
        return None
    context = ssl.create_default_context(cafile=config.tls_ca_file or None)
    if config.tls_cert_file:
        context.load_cert_chain(config.tls_cert_file, config.tls_key_file)
    if config.tls_insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def node_headers(config: Config) -> dict[str, str] | None:
    """The token header for this connection, the token file read now (a rotated Secret takes effect
    at the next connection); OSError if the file cannot be read."""
    token = Path(config.auth_token_file).read_text().strip() if config.auth_token_file else config.auth_token
    logs.secret(token)  # each value a rotation brings: websockets logs the header at DEBUG
    if not token:
        return None
    value = f"Bearer {token}" if config.auth_header.lower() == "authorization" else token
    return {config.auth_header: value}


def token_variable(config: Config) -> str:
    return "RESONANCE_AUTH_TOKEN_FILE" if config.auth_token_file else "RESONANCE_AUTH_TOKEN"


async def kafka_trouble(config: Config) -> BaseException | None:
    """Why the first bootstrap server refuses the bridge (its certificate, the SASL mechanism or the
    password), if it does: aiokafka logs that cause but raises only "unable to bootstrap", which
    would read as an unreachable broker rather than a refusal someone must fix."""
    if config.kafka_security_protocol == "PLAINTEXT":
        return None
    host, _, port = config.bootstrap_servers.split(",")[0].rpartition(":")
    try:
        probe = create_conn(
            host, int(port), client_id="resonance-probe", request_timeout_ms=5000, **kafka(config)
        )
        connection = await asyncio.wait_for(probe, 10)
    except (KafkaError, OSError, TimeoutError, ValueError) as exc:
        return exc if backoff.classify(exc).kind == "refused" else None
    connection.close()
    return None


def kafka(config: KafkaSecurity) -> dict[str, Any]:
    """aiokafka's security settings for the producer and the consumer."""
    settings: dict[str, Any] = {"security_protocol": config.kafka_security_protocol}
    if config.kafka_security_protocol.endswith("SSL"):
        context = ssl.create_default_context(cafile=config.kafka_ssl_ca_file or None)
        if config.kafka_ssl_cert_file:
            context.load_cert_chain(config.kafka_ssl_cert_file, config.kafka_ssl_key_file)
        settings["ssl_context"] = context
    if config.kafka_security_protocol.startswith("SASL_"):
        settings["sasl_mechanism"] = config.kafka_sasl_mechanism
        settings["sasl_plain_username"] = config.kafka_sasl_username
        password = Path(config.kafka_sasl_password_file).read_text().strip()
        settings["sasl_plain_password"] = logs.secret(password)
    return settings
