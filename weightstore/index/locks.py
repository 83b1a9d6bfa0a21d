"""Index queries for named locks (gc, repair): take, take over when stale, release, break."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, select, update

from weightstore.errors import LockHeld
from weightstore.index.models import LockRow
from weightstore.index.rows import insert_for

log = logging.getLogger(__name__)


def try_acquire(
    conn: Connection, name: str, holder: str, now: datetime, stale_after: timedelta
) -> bool:
    """Take the lock, or take it over when older than ``stale_after``: True when taken, False
    when it changed hands while we looked (try again). :class:`LockHeld` when it is held."""
    inserted = conn.execute(
        insert_for(conn, LockRow)
        .values(name=name, holder=holder, acquired_at=now)
        .on_conflict_do_nothing(index_elements=[LockRow.name])
        .returning(LockRow.name)
    ).first()
    if inserted is not None:
        return True
    current = conn.execute(
        select(LockRow.holder, LockRow.acquired_at).where(LockRow.name == name)
    ).one_or_none()
    if current is None:
        return False  # released since our insert
    dead = holder_is_dead(current.holder)
    if current.acquired_at > now - stale_after and not dead:
        raise LockHeld(
            f"{name} lock held by {current.holder} since "
            f"{current.acquired_at:%Y-%m-%d %H:%M:%S} UTC: wait for it to finish, or "
            f"remove it with `weightstore db unlock {name}` if that process is dead "
            f"(it is taken over automatically once older than {stale_after})"
        )
    # Only if unchanged since we looked: another process may be taking it over too.
    taken = conn.execute(
        update(LockRow)
        .where(
            LockRow.name == name,
            LockRow.holder == current.holder,
            LockRow.acquired_at == current.acquired_at,
        )
        .values(holder=holder, acquired_at=now)
    ).rowcount
    if taken:
        log.warning(
            "took over the %s lock of %s (held since %s: %s) for %s",
            name,
            current.holder,
            current.acquired_at.isoformat(),
            "its process is gone" if dead else "stale",
            holder,
        )
    return bool(taken)


def new_holder() -> str:
    """A name for this process as a lock holder: "host:pid:nonce" (:func:`holder_is_dead`
    reads it back)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def holder_is_dead(holder: str) -> bool:
    """Whether ``holder`` (made by :func:`new_holder`) names a process of this host that no longer
    exists: a holder killed with SIGKILL never released its lock, and waiting for it to go
    stale would block gc for nothing. Another host's holder, or a live pid (even one reused
    by an unrelated process), is never judged dead."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError, OSError):
        return False
    return False


def release(conn: Connection, name: str, holder: str) -> bool:
    """Release the lock if ``holder`` still holds it; return whether it did."""
    stmt = delete(LockRow).where(LockRow.name == name, LockRow.holder == holder)
    return bool(conn.execute(stmt).rowcount)


def holder_of(conn: Connection, name: str) -> str | None:
    holder: str | None = conn.scalar(select(LockRow.holder).where(LockRow.name == name))
    return holder


def break_lock(conn: Connection, name: str) -> str | None:
    """Remove the lock whoever holds it (for a dead holder); return the holder it had."""
    holder = conn.scalar(select(LockRow.holder).where(LockRow.name == name))
    conn.execute(delete(LockRow).where(LockRow.name == name))
    return holder
