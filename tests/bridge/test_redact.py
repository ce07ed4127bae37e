"""The log redaction, as the processes install it (a record factory): every kind of credential, at
every level, in the message, its arguments and its exception, through handlers added before and after,
as text and as JSON lines; the messages that hold no secret left as they were; and real bridges at
DEBUG, with real nodes, printing their handshakes redacted."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from resonance_bridge import logs
from resonance_local.embedded import EmbeddedBroker
from resonance_local.node import NodeServer

from ..support.harness import BridgeProcess, Topics, bridge_env
from ..support.pki import Authority
from ..support.poll import until

TOKEN = "tok-3f9a8c71e2"  # registered, as security.py registers what it reads
PASSWORD = "pw-77c1b0d4"
KEY = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7"
# (what the log call shows, the secret in it): each kind the filter knows.
SECRETS = {
    "bearer header": ("> Authorization: Bearer hdr-a1b2c3", "hdr-a1b2c3"),
    "basic header": ("> authorization: Basic cmVsYXk6czNjcmV0", "cmVsYXk6czNjcmV0"),
    "proxy header": ("> Proxy-Authorization: Basic cHJveHk6cHc=", "cHJveHk6cHc="),
    "custom header": ("> X-API-Key: key-5e6f7a", "key-5e6f7a"),  # registered below
    "header dict": ("headers {'Authorization': 'Bearer dict-9d8e', 'Host': 'h'}", "dict-9d8e"),
    "header list": ("[('X-API-Key', 'list-4c3b'), ('Host', 'h')]", "list-4c3b"),
    "json header": ('{"authorization": "Bearer json-1f2e", "n": 1}', "json-1f2e"),
    "ws userinfo": ("connected to ws://relay:info-6a7b@node:8766/", "info-6a7b"),
    "kafka userinfo": ("bootstrap kafka://user:kinfo-2d3c@broker:9092", "kinfo-2d3c"),
    "private key": (f"-----BEGIN PRIVATE KEY-----\n{KEY}\n-----END PRIVATE KEY-----", KEY),
    "rsa key, cut": (f"b'-----BEGIN RSA PRIVATE KEY-----\\n{KEY}", KEY),
    "sasl config": ("{'sasl_plain_username': 'u', 'sasl_plain_password': 'sasl-8b9c'}", "sasl-8b9c"),
    "password=": ("login user=u password=eq-0a1b retry", "eq-0a1b"),
    "registered token": (f"the node said: unknown token {TOKEN}", TOKEN),
    "registered password": (f"{PASSWORD} (anywhere in the text)", PASSWORD),
}
LEVELS = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """logs.install() with registrations of the test's own; the factory and the registry restored."""
    monkeypatch.setattr(logs, "SECRETS", logs.Secrets())
    previous = logging.getLogRecordFactory()
    logging.setLogRecordFactory(logging.LogRecord)
    logs.install()
    logs.header("X-API-Key")
    logs.secret(TOKEN)
    logs.secret(PASSWORD)
    yield
    logging.setLogRecordFactory(previous)


def printed(name: str, formatter: logging.Formatter | None = None) -> tuple[logging.Logger, io.StringIO]:
    """A logger (propagating nowhere) whose handler prints what it gets to the returned buffer."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter or logging.Formatter(logs.FORMAT))
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return logger, out


def raise_with(text: str) -> None:
    try:
        raise OSError(text)
    except OSError as exc:
        raise RuntimeError("the connection failed") from exc


CARRIERS: dict[str, Callable[[logging.Logger, int, str], None]] = {
    "msg": lambda log, level, text: log.log(level, text),
    "args": lambda log, level, text: log.log(level, "said %s (%d)", text, 7),
    "mapping args": lambda log, level, text: log.log(level, "said %(text)s", {"text": text}),
}


@pytest.mark.parametrize("kind", SECRETS)
@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.usefixtures("installed")
def test_every_kind_of_secret_is_blanked_at_every_level(kind: str, carrier: str) -> None:
    text, value = SECRETS[kind]
    log, out = printed(f"redact.{kind}")
    for level in LEVELS:
        CARRIERS[carrier](log, level, text)
    lines = out.getvalue()
    assert value not in lines, lines
    assert lines.count(logs.REDACTED) >= len(LEVELS), lines  # each line printed, blanked
    for level in LEVELS:
        assert f" {logging.getLevelName(level)} redact." in lines


@pytest.mark.parametrize("kind", SECRETS)
@pytest.mark.usefixtures("installed")
def test_a_secret_in_an_exception_is_blanked_as_text_and_as_json(kind: str) -> None:
    text, value = SECRETS[kind]
    for formatter in (logging.Formatter(logs.FORMAT), logs.JsonLines()):
        log, out = printed("redact.exceptions", formatter)
        try:
            raise_with(text)
        except RuntimeError:
            log.exception("giving up")
            log.debug("still trying", exc_info=True)
        lines = out.getvalue()
        assert value not in lines, lines
        assert lines.count("RuntimeError: the connection failed") == 2 and lines.count("OSError: ") == 2, (
            lines
        )
    json.loads(lines.splitlines()[0])  # the redacted traceback is still one JSON line


@pytest.mark.usefixtures("installed")
def test_handlers_added_later_and_below_get_redacted_records() -> None:
    """kopf adds its handlers (the Event poster on kopf.objects, its stream handler on the root under
    `kopf run`) after the process set logging up; a child logger's records skip its parents' filters."""
    _, parent_out = printed("redact.tree")
    child = logging.getLogger("redact.tree.child")
    child_out = io.StringIO()
    child.handlers[:] = [logging.StreamHandler(child_out)]
    child.propagate = True
    child.warning("> Authorization: %s", "Bearer late-7e8f")
    both = parent_out.getvalue() + child_out.getvalue()
    assert "late-7e8f" not in both and both.count("> Authorization: ***") == 2, both


@pytest.mark.usefixtures("installed")
def test_messages_without_secrets_are_left_alone() -> None:
    """The bridge's own advice names the variables and headers; a record with nothing to blank keeps
    its template and arguments (HoldRepeats groups by template)."""
    plain = [
        "KAFKA_SASL_PASSWORD_FILE=/var/run/secrets/kafka/password names no readable file",
        "HTTP 401 for ws://node:8766: check RESONANCE_AUTH_TOKEN_FILE",
        "RESONANCE_AUTH_HEADER='X Y' is no HTTP header name: use e.g. Authorization or X-API-Key",
        "Config(auth_header='Authorization', tls_ca_file='/ca.crt', auth_token='***')",
        "{'key': 'token', 'path': 'token'} {'tokenSecretRef': {'name': 'node-token'}}",
        "https://kube:6443/apis/resonance.io/v1alpha1/namespaces/t/resonancenodes?watch=true",
        "-----BEGIN CERTIFICATE-----",
    ]
    for text in plain:
        assert logs.SECRETS.redact(text) == text
    record = logging.getLogger("redact.plain").makeRecord(
        "r", logging.INFO, "f", 1, "node %s down", ("a",), None
    )
    assert (record.msg, record.args) == ("node %s down", ("a",))


@pytest.mark.usefixtures("installed")
def test_registered_values() -> None:
    """Every rotation's token is remembered (up to KEEP); values too short to be told from words are
    left to the patterns."""
    tokens = [f"rotated-{i:02d}" for i in range(logs.KEEP + 2)]
    for token in tokens:
        assert logs.secret(token) == token
    logs.secret("abc")
    clean = logs.SECRETS.redact(" ".join(tokens[-logs.KEEP :]) + " abc")
    assert clean == " ".join([logs.REDACTED] * logs.KEEP) + " abc"
    assert logs.SECRETS.redact(tokens[0]) == tokens[0]  # the oldest forgotten: the bound
    logs.secret("a-token")
    logs.secret("a-token-and-more")
    assert logs.SECRETS.redact("a-token-and-more a-token") == "*** ***"  # the longer one first


@pytest.mark.usefixtures("installed")
def test_an_unformattable_record_is_printed_redacted() -> None:
    """Arguments that do not fit the template: logging would print both raw in its error report."""
    log, out = printed("redact.broken")
    log.warning("one %s two %s", "> Authorization: Bearer raw-3a4b")
    assert "raw-3a4b" not in out.getvalue() and "unformattable" in out.getvalue(), out.getvalue()


async def test_no_secret_reaches_a_bridges_log_at_debug(
    broker: EmbeddedBroker, topics: Topics, workdir: Path
) -> None:
    """At DEBUG websockets logs every handshake header: three bridges, each with a kind of secret (a
    bearer token over mutual TLS; a custom header and a URL's userinfo; a SASL password), show those
    lines with the secrets redacted, and no secret value anywhere."""
    pki = Authority.make(workdir / "pki")
    bearer, api_key, password = "bearer-s3cret-token", "api-s3cret-key", "sasl-s3cret-password"
    for name, value in (("bearer", bearer), ("api-key", api_key), ("password", password)):
        (workdir / name).write_text(value + "\n")
    tls = pki.server_context(pki.issue("server"), require_client=True)
    guarded = NodeServer("guarded", port=0, printer=None, tls=tls, token=bearer)
    await guarded.start()
    keyed = NodeServer("keyed", port=0, printer=None, token=api_key, token_header="X-API-Key")
    await keyed.start()
    client = pki.issue("bridge", client=True)
    kinds = {  # name: (endpoint, settings)
        "mutual": (
            f"wss://127.0.0.1:{guarded.port}",
            {
                "RESONANCE_TLS_CA_FILE": str(pki.cert),
                "RESONANCE_TLS_CERT_FILE": str(client.cert),
                "RESONANCE_TLS_KEY_FILE": str(client.key),
                "RESONANCE_AUTH_TOKEN_FILE": str(workdir / "bearer"),
            },
        ),
        "custom": (
            f"ws://relay:userinfo-s3cret@127.0.0.1:{keyed.port}",
            {"RESONANCE_AUTH_TOKEN_FILE": str(workdir / "api-key"), "RESONANCE_AUTH_HEADER": "X-API-Key"},
        ),
        "sasl": (
            "ws://127.0.0.1:1",
            {
                "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "KAFKA_SASL_MECHANISM": "PLAIN",
                "KAFKA_SASL_USERNAME": "resonance",
                "KAFKA_SASL_PASSWORD_FILE": str(workdir / "password"),
            },
        ),
    }
    debug = {"RESONANCE_LOG_LEVEL": "DEBUG"}
    bridges = {  # groups of their own: a bridge that never reaches its node must hold no one's partition
        name: BridgeProcess(
            bridge_env(broker, topics, endpoint, KAFKA_GROUP_ID=f"{topics.group}-{name}", **debug, **env),
            workdir / f"{name}.log",
        ).start()
        for name, (endpoint, env) in kinds.items()
    }
    try:
        await bridges["mutual"].wait_ready()
        await bridges["custom"].wait_ready()
        await until(lambda: "kafka refused" in bridges["sasl"].readyz(), 30, bridges["sasl"].output)
    finally:
        for bridge in bridges.values():
            bridge.stop()
        await guarded.close()
        await keyed.close()
    output = {name: bridge.output() for name, bridge in bridges.items()}
    # DEBUG was on, and the header lines are there, redacted.
    assert "DEBUG websockets.client: > Authorization: ***" in output["mutual"], output["mutual"]
    assert "DEBUG websockets.client: > X-API-Key: ***" in output["custom"], output["custom"]
    assert "DEBUG websockets.client: > Authorization: ***" in output["custom"]  # Basic, from the userinfo
    assert "ws://***@127.0.0.1" in output["custom"]
    assert " DEBUG " in output["sasl"], output["sasl"]
    key_lines = client.key.read_text().splitlines()[1:-1]
    for value in (bearer, api_key, password, "userinfo-s3cret", "cmVsYXk6", *key_lines):
        for log in output.values():
            assert value not in log, f"a secret leaked: {value[:12]}...\n{log}"
