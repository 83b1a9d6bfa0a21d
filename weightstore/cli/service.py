"""The service's commands: ``serve``, ``token create|list|revoke``, ``push``, ``pull``, ``clone``.

Registered on the app by ``cli/main.py``. A REMOTE is a service URL (``http://host:8000``,
with ``--token`` or ``$WEIGHTSTORE_TOKEN`` for writes and non-public reads) or another store's
folder.

The service's own dependencies (the ``server`` extra: FastAPI, uvicorn, httpx) are imported
when one of these commands runs, so the rest of the CLI works without them.
"""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from weightstore.cli.app import state, stderr, stdout
from weightstore.cli.progress import ByteProgress
from weightstore.cli.render import human_bytes, local_time, ref_text, result_table
from weightstore.errors import CorruptObject, InvalidInput
from weightstore.types import TOKEN_SCOPES as SCOPES

if TYPE_CHECKING:  # imported by the commands that open a store: they bring torch
    from weightstore.remote import RemoteStore
    from weightstore.store import WeightStore


def _weightstore() -> type[WeightStore]:
    from weightstore.store import WeightStore

    return WeightStore


def _extra(module: str) -> Any:
    """Import ``module``, or say which extra provides what it needs."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise InvalidInput(
            f"this command needs the service's dependencies: pip install 'weightstore[server]' "
            f"({e})"
        ) from e


token_app = typer.Typer(help="Manage the service's bearer tokens.", no_args_is_help=True)

TokenOpt = Annotated[
    str | None,
    typer.Option("--token", envvar="WEIGHTSTORE_TOKEN", help="Bearer token for the service."),
]
RemoteArg = Annotated[str, typer.Argument(help="Service URL (http://host:8000) or store folder.")]
TasksArg = Annotated[list[str] | None, typer.Argument(help="Tasks (default: all).")]


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    store: Annotated[
        str | None,
        typer.Option("--store", help="Store folder or URL (default: the global --store)."),
    ] = None,
    index_url: Annotated[
        str | None, typer.Option("--index-url", help="Index database (default: the store's).")
    ] = None,
    public_read: Annotated[
        bool, typer.Option("--public-read", help="Serve reads without a token.")
    ] = False,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    max_upload: Annotated[
        int,
        typer.Option(
            "--max-upload-bytes",
            min=1,
            help="Largest upload (file, object).",
            show_default=f"{64 << 30} (64 GiB)",
        ),
    ] = 64 << 30,
    max_json: Annotated[
        int,
        typer.Option(
            "--max-json-bytes",
            min=1,
            help="Largest JSON body (a manifest, digests to check).",
            show_default=f"{64 << 20} (64 MiB)",
        ),
    ] = 64 << 20,
    header_timeout: Annotated[
        float,
        typer.Option(
            "--header-timeout",
            min=0.1,
            metavar="SECONDS",
            help="Close a connection that sends no request head for this long (stalled "
            "clients would otherwise hold a socket each, for ever).",
        ),
    ] = 30.0,
    body_timeout: Annotated[
        float,
        typer.Option(
            "--body-timeout",
            min=0.1,
            metavar="SECONDS",
            help="Drop a request whose body sends no byte for this long (408).",
        ),
    ] = 60.0,
    min_body_rate: Annotated[
        float,
        typer.Option(
            "--min-body-rate",
            min=0,
            metavar="BYTES/S",
            help="Past --body-timeout, drop a request whose body averages fewer bytes a second "
            "than this (408; 0: no minimum). A client trickling a byte a minute would otherwise "
            "hold its request for as long as the upload limit allows.",
        ),
    ] = 500.0,
    max_connections: Annotated[
        int,
        typer.Option(
            "--max-connections", min=1, help="Connections beyond this many are closed at once."
        ),
    ] = 2048,
) -> None:
    """Run the REST service (docs at /docs, API under /v1)."""
    uvicorn = _extra("uvicorn")
    server = _extra("weightstore.server")
    st = state(ctx)
    path = store or st.path
    url = index_url or st.index_url
    _weightstore().open(path, index_url=url, create=False).close()  # fail here, not per worker
    # Workers may start elsewhere: a folder is made absolute, a URL (s3://) kept as given.
    where = path if "://" in path else str(Path(path).resolve())
    settings = server.ServerSettings(
        where,
        url,
        public_read=public_read,
        max_upload_bytes=max_upload,
        max_json_bytes=max_json,
        header_timeout=header_timeout,
        max_connections=max_connections,
        body_timeout=body_timeout,
        min_body_rate=min_body_rate,
    )
    protocol = _extra("weightstore.server.protocol").configure(header_timeout, max_connections)
    if workers == 1:
        uvicorn.run(server.create_app(settings), host=host, port=port, http=protocol)
        return
    # Worker processes build their own app (and open the store themselves) from the env.
    os.environ[_extra("weightstore.server.settings").SETTINGS_ENV] = settings.to_json()
    uvicorn.run(
        "weightstore.server.app:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        http=protocol,
        # A worker imports torch before it answers the parent's health check: slow on a busy
        # machine, where the default would kill and restart workers in a loop.
        timeout_worker_healthcheck=120,
    )


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    scope: Annotated[str, typer.Option(help=f"One of {', '.join(SCOPES)}.")] = "read",
    name: Annotated[str, typer.Option(help="A note on who or what uses it.")] = "",
) -> None:
    """Create a token and print it (once: only its hash is kept)."""
    info, token = state(ctx).store().tokens.create(scope, name)
    stdout().print(result_table([("id", info.id), ("scope", info.scope), ("token", token)]))


@token_app.command("list")
def token_list(ctx: typer.Context) -> None:
    """List tokens (never their secrets)."""
    tokens = state(ctx).store().tokens.list()
    if tokens:
        stdout().print(f"{'id':<{len(tokens[0].id)}}  scope  {'created':<16}  name")
    for t in tokens:
        stdout().print(f"{t.id}  {t.scope:<5}  {local_time(t.created_at)}  {t.name}")


@token_app.command("revoke")
def token_revoke(
    ctx: typer.Context, token_id: Annotated[str, typer.Argument(help="Token id (or the token).")]
) -> None:
    """Revoke a token: requests with it are refused from now on."""
    state(ctx).store().tokens.revoke(token_id)
    stdout().print(f"revoked {token_id[:20]}")


def _open(location: str, token: str | None) -> WeightStore | RemoteStore:
    if location.startswith(("http://", "https://")):
        remote: RemoteStore = _extra("weightstore.remote").RemoteStore(location, token=token)
        return remote
    return _weightstore().open(location, create=False)


def _transfer(
    verb: str,
    local: WeightStore,
    remote: str,
    token: str | None,
    tasks: list[str] | None,
    outgoing: bool,
) -> None:
    """Push to (``outgoing``) or pull from REMOTE, with a byte progress bar and a summary."""
    other = _open(remote, token)
    try:
        with ByteProgress(f"{verb} {remote}", None) as bar:
            src, dst = (local, other) if outgoing else (other, local)
            r = _extra("weightstore.sync").transfer(src, dst, tasks or [], progress=bar)
    finally:
        other.close()
    stdout().print(
        result_table(
            [
                (verb, remote),
                ("snapshots", str(r.snapshots)),
                ("objects", str(r.objects)),
                ("bytes", human_bytes(r.object_bytes)),
            ]
        )
    )
    if r.damaged:
        for d in r.damaged:
            where = ", ".join(f"{name} ({digest[:12]})" for name, digest in d.tensors[:5])
            stderr().print(
                f"not sent: {d.snapshot.short_id} ({ref_text(d.snapshot)}): "
                f"{where or d.reason}{' ...' if len(d.tensors) > 5 else ''}"
            )
        side = "this store" if outgoing else remote
        raise CorruptObject(
            f"{len(r.damaged)} snapshot(s) not sent: objects they need are damaged; every "
            f"intact snapshot was sent. Run `weightstore verify` on {side} "
            "(`verify --repair FILE` rewrites damaged objects from weights you still have)"
        )


def push(
    ctx: typer.Context, remote: RemoteArg, tasks: TasksArg = None, token: TokenOpt = None
) -> None:
    """Send this store's snapshots of TASKS that REMOTE lacks, with only the objects it lacks."""
    _transfer("pushed to", state(ctx).store(), remote, token, tasks, outgoing=True)


def pull(
    ctx: typer.Context, remote: RemoteArg, tasks: TasksArg = None, token: TokenOpt = None
) -> None:
    """Fetch REMOTE's snapshots of TASKS that this store lacks, with only the objects it lacks."""
    _transfer("pulled from", state(ctx).store(create=True), remote, token, tasks, outgoing=False)


def clone(
    remote: RemoteArg,
    path: Annotated[Path, typer.Argument(help="New store folder.")],
    token: TokenOpt = None,
) -> None:
    """Copy every snapshot of REMOTE into a new store at PATH."""
    if path.exists() and not path.is_dir():
        raise InvalidInput(f"{path} is a file: clone makes a new store folder")
    if path.exists() and any(path.iterdir()):
        raise InvalidInput(f"{path} exists and is not empty: clone makes a new store")
    made = not path.exists()
    try:
        with _weightstore().open(path) as local:
            _transfer("cloned from", local, remote, token, None, outgoing=False)
    except CorruptObject:
        raise  # some snapshots were damaged: the intact ones are there, keep them
    except BaseException:
        # Nothing of a failed clone stays behind (a bad token, an unreachable server): the
        # retry starts from the same empty place.
        if made:
            shutil.rmtree(path, ignore_errors=True)
        else:
            for child in path.iterdir():
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        raise
