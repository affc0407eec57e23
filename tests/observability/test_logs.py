"""Tests of the structured request log."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from flask.testing import FlaskClient

from testbed.ports import free_port
from testbed.vora_server import running_server
from testbed.wait import wait_for
from tests.harness.tokens import TokenFactory
from vora.observability.logs import (
    JsonFormatter,
    TextFormatter,
    access_line,
    configure_logging,
    log_uncaught,
    redact,
)

Headers = Callable[..., dict[str, str]]


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    """Render the captured access records as the JSON lines VORA writes."""
    formatter = JsonFormatter()
    return [json.loads(formatter.format(r)) for r in caplog.records if r.name == "vora.access"]


def test_one_json_line_per_request(client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    """Each request yields one JSON line with id, method, path, status, latency and operation."""
    with caplog.at_level(logging.INFO, logger="vora.access"):
        response = client.get("/vora/health/liveness", headers={"X-Request-ID": "req-1"})
    [line] = access_lines(caplog)
    assert line["request_id"] == response.headers["X-Request-ID"] == "req-1"
    assert line["method"] == "GET"
    assert line["path"] == "/vora/health/liveness"
    assert line["status"] == 204
    assert line["operation"] == "liveness"
    assert isinstance(line["latency_ms"], float)


def test_tokens_never_reach_the_log(
    client: FlaskClient, auth: Headers, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """Neither the Authorization header nor a token in the query string appears in any log line."""
    headers = auth("alice")
    token = headers["Authorization"].split()[1]
    with caplog.at_level(logging.DEBUG):
        client.get("/vora/identity", headers=headers)
        client.post(f"/vora/logout/910111000?token={token}", headers=headers)
        client.get("/vora/identity", headers={"Authorization": "Bearer garbage-secret-value"})
    formatter = JsonFormatter()
    rendered = "\n".join(formatter.format(r) for r in caplog.records) + capsys.readouterr().err
    assert token not in rendered
    assert "garbage-secret-value" not in rendered
    assert "Authorization" not in rendered


def test_redact_masks_every_credential_shape() -> None:
    """Query tokens, bearer values, JWTs and WebSocket tokens are masked; plain lines pass unchanged."""
    jwt_like = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"
    ws_token = "v1.OTEwMTExMDAw." + "A" * 43
    line = f"GET /vora/ws?token=abc&x=1 Authorization: Bearer xyz {jwt_like} {ws_token}"
    masked = redact(line)
    for secret in ["abc", "xyz", jwt_like, ws_token]:
        assert secret not in masked
    plain = '{"path": "/vora/identity", "status": 200}'
    assert redact(plain) is plain


def test_access_line_is_the_one_the_formatter_renders() -> None:
    """The directly written access line holds the same JSON as JsonFormatter renders from its record."""
    fields = {
        "request_id": "r1",
        "method": "GET",
        "path": '/vora/x"\u00e9',
        "status": 200,
        "latency_ms": 1.5,
        "operation": None,
    }
    record = logging.LogRecord("vora.access", logging.INFO, __file__, 0, "request", None, None)
    record.fields = fields
    direct, formatted = json.loads(access_line(fields)), json.loads(JsonFormatter().format(record))
    assert isinstance(direct.pop("ts"), str)
    assert isinstance(formatted.pop("ts"), str)
    assert direct == formatted


def test_access_line_skips_logging_when_vora_handler_is_alone(
    client: FlaskClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """With only VORA's own handler configured, each request's line reaches stderr without a LogRecord."""
    root = logging.getLogger()
    saved_handlers, saved_level, saved_factory = root.handlers[:], root.level, logging.getLogRecordFactory()
    access_records: list[logging.LogRecord] = []

    def counting_factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = saved_factory(*args, **kwargs)
        if record.name == "vora.access":
            access_records.append(record)
        return record

    try:
        configure_logging("INFO")
        logging.setLogRecordFactory(counting_factory)
        client.get("/vora/health/liveness", headers={"X-Request-ID": "req-2"})
    finally:
        logging.setLogRecordFactory(saved_factory)
        root.handlers[:], root.level = saved_handlers, saved_level
    [line] = [json.loads(text) for text in capsys.readouterr().err.splitlines() if '"vora.access"' in text]
    assert access_records == []
    assert (line["request_id"], line["status"], line["operation"]) == ("req-2", 204, "liveness")


@pytest.mark.slow
def test_every_line_a_real_gunicorn_writes_is_json(
    env: dict[str, str], tmp_path: Path, make_token: TokenFactory
) -> None:
    """Gunicorn's own lines (a CRITICAL WORKER TIMEOUT included) and VORA's are JSON; a request's carry its id."""
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    gunicorn_timeout = 4  # seconds without a heartbeat before the master kills a worker
    server_env = {**env, "VORA_REDIS_URL": dead_redis, "GUNICORN_CMD_ARGS": f"--timeout {gunicorn_timeout}"}
    with running_server(server_env, tmp_path, workers=1) as server:
        # A request that fails on Redis logs a warning from inside the request: it names the request.
        response = requests.get(
            f"{server.base_url}/identity",
            headers={"Authorization": f"Bearer {make_token('alice')}", "X-Request-ID": "timeout-test-1"},
            timeout=10,
        )
        assert response.status_code == 503
        [worker] = server.worker_pids()
        os.kill(worker, signal.SIGSTOP)  # a frozen worker: the master times it out and kills it
        try:
            wait_for(
                lambda: "WORKER TIMEOUT" in server.log()
                and len(server.worker_pids()) == 1
                and worker not in server.worker_pids(),
                gunicorn_timeout * 6,
                what="the master to time the frozen worker out and boot another",
            )
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker, signal.SIGCONT)
    text = server.log()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # raises on any line that is not JSON
    assert all({"ts", "level", "logger", "msg"} <= line.keys() for line in lines)
    [timeout_line] = [line for line in lines if "WORKER TIMEOUT" in line["msg"]]
    assert (timeout_line["level"], timeout_line["logger"]) == ("critical", "gunicorn.error")
    assert str(worker) in timeout_line["msg"]
    [redis_line] = [line for line in lines if line["msg"] == "redis unavailable"]
    assert redis_line["request_id"] == "timeout-test-1"
    assert any(line["logger"] == "vora.access" and line["request_id"] == "timeout-test-1" for line in lines)
    assert sum("Booting worker" in line["msg"] for line in lines) == 2


def test_uncaught_thread_exceptions_and_warnings_become_json_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """After log_uncaught, an exception no thread caught and a Python warning are logged as JSON lines."""
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("vora.test-uncaught")
    logger.addHandler(handler)
    logger.propagate = False
    warnings_logger = logging.getLogger("py.warnings")
    warnings_logger.addHandler(handler)
    try:
        log_uncaught(logger)

        def fail() -> None:
            raise RuntimeError("nobody caught this")

        thread = threading.Thread(target=fail)
        thread.start()
        thread.join()
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("a library's warning", UserWarning, stacklevel=1)
    finally:
        logging.captureWarnings(False)
        warnings_logger.removeHandler(handler)
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    [failure] = [line for line in lines if line["msg"] == "uncaught exception"]
    assert "RuntimeError: nobody caught this" in failure["exc"]
    assert any("a library's warning" in line["msg"] and line["logger"] == "py.warnings" for line in lines)


def test_text_format_renders_readable_lines_and_still_redacts() -> None:
    """VORA_LOG_FORMAT=text writes `time LEVEL logger: message  fields`, an access line as `METHOD path status`."""
    formatter = TextFormatter()
    access = logging.LogRecord("vora.access", logging.INFO, __file__, 1, "request", None, None)
    access.fields = {"request_id": "r-1", "method": "GET", "path": "/vora/identity", "status": 200, "latency_ms": 1.5}
    line = formatter.format(access)
    assert " INFO    vora.access: GET /vora/identity 200 1.5 ms  request_id=r-1" in line
    secret = logging.LogRecord("vora.http", logging.WARNING, __file__, 1, "saw Bearer abc.def.ghi", None, None)
    assert "abc.def.ghi" not in formatter.format(secret)
    assert not formatter.format(secret).startswith("{")


@pytest.mark.slow
def test_a_real_gunicorn_logs_text_when_asked(env: dict[str, str], tmp_path: Path) -> None:
    """With VORA_LOG_FORMAT=text, gunicorn's lines and VORA's access lines are readable text, not JSON."""
    with running_server({**env, "VORA_LOG_FORMAT": "text"}, tmp_path, workers=1) as server:
        assert requests.get(f"{server.base_url}/health/liveness", timeout=10).status_code == 204
        wait_for(lambda: "GET /vora/health/liveness 204" in server.log(), 10, what="the access line")
    lines = [line for line in server.log().splitlines() if line.strip()]
    assert not [line for line in lines if line.startswith("{")]
    assert any(" gunicorn.error: Booting worker" in line for line in lines)


# Run in a process of its own: it fills the open-file table, as a worker holding too many sockets does.
EXHAUSTED_FILES_SCRIPT = """
import os, resource, sys
from vora.app import create_app
from vora.core.settings import Settings
from vora.observability.logs import configure_logging

configure_logging("WARNING")
client = create_app(Settings.from_env()).test_client()
headers = {"Authorization": "Bearer " + os.environ["TEST_TOKEN"]}
# Redis refuses: the token, keys and spec are loaded, and no pooled connection is left open.
assert client.get("/vora/identity", headers=headers).status_code == 503
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 16, hard))  # quick to fill
held = []
try:
    while True:
        held.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
status = client.get("/vora/identity", headers=headers).status_code
for fd in held:
    os.close(fd)
sys.exit(0 if status == 503 else 1)
"""


def test_a_redis_failure_logs_its_message_so_an_open_file_limit_is_told_from_a_refusal(
    env: dict[str, str], make_token: TokenFactory
) -> None:
    """A worker out of file descriptors and a Redis refusing both log "redis unavailable", each with its own detail."""
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    run = subprocess.run(
        [sys.executable, "-c", EXHAUSTED_FILES_SCRIPT],
        env={**os.environ, **env, "VORA_REDIS_URL": dead_redis, "VORA_REDIS_TIMEOUT": "1", "TEST_TOKEN": make_token()},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    refused, exhausted = [line for line in lines if line["msg"] == "redis unavailable"]
    assert refused["error"] == exhausted["error"] == "ConnectionError"  # the type alone cannot tell them apart
    assert "Connection refused" in refused["detail"]
    assert exhausted["detail"].startswith("Error 24 ")
    assert "Too many open files" in exhausted["detail"]
    assert all("\n" not in line["detail"] and len(line["detail"]) <= 201 for line in (refused, exhausted))
