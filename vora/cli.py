"""The `vora` command: serve, mint dev tokens, provision identities, check the spec."""

from __future__ import annotations

import functools
import json
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from vora.core.settings import Settings, SettingsError

if TYPE_CHECKING:
    from vora.services import Stores

IDENTITY_HELP = "phone numbers, or a username for administrators"


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def uses_redis(command: Callable[..., None]) -> Callable[..., None]:
    """Turn a Redis failure inside a command into one `Error: ...` line and exit status 1."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        from vora.core.error_shape import clip
        from vora.store.client import REDIS_ERRORS

        failures: tuple[type[Exception], ...] = (*REDIS_ERRORS, OSError)
        try:
            command(*args, **kwargs)
        except failures as exc:
            raise click.ClickException(f"Redis failed: {type(exc).__name__}: {clip(str(exc), 200)}") from None

    return run


@click.group()
def main() -> None:
    """VORA telephony API gateway."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=18085, show_default=True, type=int, help="Port to listen on.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64), help="Gevent worker processes.")
def serve(host: str, port: int, workers: int) -> None:
    """Serve the API and the WebSocket with gunicorn and gevent workers."""
    _settings()  # fail here, not in every worker, on a bad variable
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        "python:vora.gunicorn_conf",
        "--bind",
        bind,
        "--workers",
        str(workers),
        "vora.wsgi:app_from_env()",
    ]
    os.execv(sys.executable, argv)


@main.command("dev-key")
@click.argument("path", type=click.Path(path_type=Path), default=Path(".vora/dev-key.pem"))
def dev_key(path: Path) -> None:
    """Create the local development signing key (kept if it exists)."""
    from vora.auth.devkeys import create_dev_key

    created = create_dev_key(path)
    click.echo(f"{'created' if created else 'kept'} {path}")


@main.command("server-key")
@click.argument("path", type=click.Path(path_type=Path), default=Path(".vora/server-api.key"))
def server_key(path: Path) -> None:
    """Create a file holding a random server API key (kept if it exists), for VORA_SERVER_API_KEYS_FILE."""
    from vora.core.server_keys import create_key_file

    created = create_key_file(path)
    click.echo(f"{'created' if created else 'kept'} {path}")


@main.command()
@click.option("--sub", "subject", default="demo", show_default=True, help="The user the token is for.")
@click.option("--scope", "scopes", multiple=True, help="A scope to grant (repeat); default: all four VORA scopes.")
@click.option("--lifetime", default=3600, show_default=True, type=int, help="Seconds until the token expires.")
@click.option("--key", "key_path", type=click.Path(path_type=Path), help="Private key PEM; default: VORA_DEV_KEY.")
def token(subject: str, scopes: tuple[str, ...], lifetime: int, key_path: Path | None) -> None:
    """Mint an access token signed with the development key."""
    from vora.auth.devkeys import mint_token
    from vora.core.catalog import ALL_SCOPES

    settings = _settings()
    path = key_path or settings.dev_key
    if path is None or not path.is_file():
        raise click.ClickException("no dev key: set VORA_DEV_KEY or pass --key (make run creates .vora/dev-key.pem)")
    click.echo(
        mint_token(
            path.read_bytes(), subject, settings.oauth_issuer, settings.oauth_audience, scopes or ALL_SCOPES, lifetime
        )
    )


@main.group()
def identities() -> None:
    """Provision which identities each user owns."""


def _stores() -> Stores:
    from vora.services import build_stores

    return build_stores(_settings())


def _check_identities(values: tuple[str, ...]) -> list[str]:
    from vora.core.identities import is_identity

    bad = [v for v in values if not is_identity(v)]
    if bad:
        raise click.BadParameter(f"not an identity: {', '.join(bad)} ({IDENTITY_HELP})")
    return list(values)


@identities.command("add")
@click.argument("user")
@click.argument("identity", nargs=-1, required=True)
@uses_redis
def identities_add(user: str, identity: tuple[str, ...]) -> None:
    """Give USER the IDENTITY values."""
    added = _stores().ownership.grant(user, _check_identities(identity))
    click.echo(f"{user}: {added} added, {len(identity) - added} already there")


@identities.command("remove")
@click.argument("user")
@click.argument("identity", nargs=-1, required=True)
@uses_redis
def identities_remove(user: str, identity: tuple[str, ...]) -> None:
    """Take IDENTITY values from USER and end USER's sessions on them."""
    removed, ended = _stores().ownership.revoke(user, _check_identities(identity))
    click.echo(f"{user}: {removed} removed, {len(ended)} session(s) ended")


@identities.command("list")
@click.argument("user")
@uses_redis
def identities_list(user: str) -> None:
    """Print USER's identities, one a line."""
    for value in _stores().ownership.identities_of(user):
        click.echo(value)


@main.group()
def events() -> None:
    """Publish telephony events (the ingress the telephony side uses)."""


class UnconfirmedPublish(click.ClickException):
    """The event was stored on the master, but not confirmed by the replicas asked for (exit status 3)."""

    exit_code = 3


@events.command("publish")
@click.argument("identity")
@click.argument("event_type", metavar="TYPE")
@click.option("--data", "data_json", default="{}", show_default=True, help="The event's data, as JSON.")
@click.option("--timestamp", help="When it happened (RFC 3339); default: now.")
@uses_redis
def events_publish(identity: str, event_type: str, data_json: str, timestamp: str | None) -> None:
    """Publish one TYPE event for IDENTITY; print its eventId and sequenceNumber."""
    from vora.events.publisher import InvalidEvent
    from vora.store.streams import NotReplicated

    try:
        data = json.loads(data_json)
    except ValueError as exc:
        raise click.BadParameter(f"--data is not JSON: {exc}") from None
    try:
        published = _stores().publisher.publish(identity, event_type, data, timestamp)
    except InvalidEvent as exc:
        raise click.ClickException(str(exc)) from None
    except NotReplicated as exc:
        # Printed all the same: the event is in the stream, and a retry would publish it twice.
        click.echo(json.dumps({"eventId": exc.event_id, "sequenceNumber": exc.sequence_number, "replicated": False}))
        raise UnconfirmedPublish(str(exc)) from None
    click.echo(json.dumps({"eventId": published.event_id, "sequenceNumber": published.sequence_number}))


@main.command()
@click.option("--token", envvar="VORA_WS_TOKEN", required=True, help="The webSocketToken from /identity/setup.")
@click.option("--url", default="ws://127.0.0.1:18085/vora/ws", show_default=True, help="The WebSocket URL.")
@click.option("--last-event-id", help="Resume after this eventId.")
@click.option("--count", type=int, help="Exit after this many events (lifecycle events included).")
@click.option("--timeout", type=float, default=None, help="Exit after this many seconds without a message.")
def listen(token: str, url: str, last_event_id: str | None, count: int | None, timeout: float | None) -> None:
    """Open the event WebSocket and print each event as one JSON line; drops are resumed with lastEventId."""
    try:
        from vora.ws.listen import ListenError, listen
    except ImportError as exc:  # the server image ships without the client SDK
        raise click.ClickException(f"vora listen needs the Python SDK (pip install clients/python): {exc}") from None

    def connected() -> None:
        resuming = f", resuming after eventId {last_event_id}" if last_event_id else ""
        click.echo(f"connected to {url}{resuming}; waiting for events (Ctrl-C stops)", err=True)

    try:
        listen(
            url,
            token,
            lambda envelope: click.echo(json.dumps(envelope)),
            last_event_id=last_event_id,
            count=count,
            timeout=timeout,
            on_open=connected,
        )
    except ListenError as exc:
        raise click.ClickException(str(exc)) from None


@main.command("check-spec")
def check_spec() -> None:
    """Validate the spec documents, their agreement with the code, and that every operation has a finished handler."""
    from vora.tools.spec_check import check_all

    problems = check_all(_settings().spec_dir)
    for problem in problems:
        click.echo(f"FAIL {problem}", err=True)
    if problems:
        raise SystemExit(1)
    click.echo("spec OK")


@main.command("scaffold")
@click.argument("operation_ids", metavar="OPERATION_ID", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Scaffold every operation that has no handler.")
def scaffold(operation_ids: tuple[str, ...], every: bool) -> None:
    """Write a typed handler stub (answering 501 in development) and a test module for each OPERATION_ID."""
    from vora.http.operations import Binding, unfinished_operations
    from vora.tools.scaffold import ScaffoldError
    from vora.tools.scaffold import scaffold as write_stub
    from vora.tools.spec_check import check_operation_names, check_yaml

    spec_dir = _settings().spec_dir
    # Without readable YAML, an operationId and a tag, no handler can be placed: say why, as check-spec does.
    unnamed = check_yaml(spec_dir) or check_operation_names(spec_dir)
    if unnamed:
        raise click.ClickException("\n".join(unnamed))
    if every:
        missing = [op.operation_id for op, binding in unfinished_operations(spec_dir) if binding is Binding.MISSING]
        operation_ids = (*operation_ids, *missing)
    if not operation_ids:
        raise click.UsageError("name an OPERATION_ID, or pass --all")
    for operation_id in operation_ids:
        try:
            written = write_stub(spec_dir, operation_id)
        except ScaffoldError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"{operation_id}: wrote {', '.join(str(path) for path in written)}")
    click.echo("Implement each stub (remove @not_built_yet), then `vora check-spec` passes again.")


@main.command("check-breaking")
def check_breaking() -> None:
    """Fail on each change of a spec document that breaks clients of the last release, unless acknowledged."""
    from vora.tools.spec_guard import ACKNOWLEDGED_FILE, GuardError, acknowledgement_entries
    from vora.tools.spec_guard import check_breaking as guard

    spec_dir = _settings().spec_dir
    try:
        report = guard(spec_dir)
    except GuardError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"compared with {report.baseline}")
    for document in report.unreleased:
        click.echo(f"new   {document}: not in the release, nothing to compare")
    for change in report.acknowledged:
        click.echo(f"ACK   {change.line()}")
    for change in report.breaking:
        click.echo(f"BREAK {change.line()}", err=True)
    if report.failed:
        click.echo(
            f"{len(report.breaking)} breaking change(s); if deliberate, name each in {spec_dir / ACKNOWLEDGED_FILE}"
            " under acknowledged:, each with the reason clients can live with it:",
            err=True,
        )
        click.echo(acknowledgement_entries(report.breaking), err=True, nl=False)
        raise SystemExit(1)
    click.echo("no unacknowledged breaking change")


@main.command("config")
@click.option("--defaults", is_flag=True, help="List every variable with its default instead.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (name, value, source) per variable.")
def config(defaults: bool, as_json: bool) -> None:
    """Check the settings in effect and print each VORA_* variable as it would be set; secrets are masked."""
    if defaults:
        click.echo(json.dumps(dict(Settings.variables()), indent=2))
        return
    shown = _settings().in_effect(os.environ)
    if as_json:
        click.echo(json.dumps([vars(setting) for setting in shown], indent=2))
        return
    for setting in shown:
        remark = f"  # {setting.source}{f'; {setting.note}' if setting.note else ''}"
        click.echo(f"{setting.name}={shlex.quote(setting.written) if setting.written else ''}{remark}")


if __name__ == "__main__":
    main()
