"""What a store keeps -- snapshots of passivated sessions, session records, event-log
entries -- and the snapshot's versioned encoding (sans-IO).

Theory of operation
-------------------
Passivating a session keeps only what is needed to bring it back exactly where it was:
its identity (id, token hash, principal), the application's JSON data, and the delivery
state -- the encoded messages not yet acknowledged by every client, and per client the
highest server seq it acknowledged, the highest client seq the application took and the
highest it received. Client messages that had arrived but that the application had not
taken yet are kept too (their ``inbox``): their client may be gone for good -- a process
that died -- and one that resends them has them dropped as duplicates, as it would
without the passivation; a client resuming from a new process numbers on from what was
received. Nothing that runs (tasks, connections, resources) survives; the
application starts again, with its data.

A snapshot is one JSON document with a version number. Decoding checks every field and
raises CorruptSnapshotError (naming what is wrong) or StoreVersionError (for a version
this code does not know); a snapshot is never guessed at.
"""

from __future__ import annotations

import json
from typing import Any, Final, Literal

import attrs

from .exceptions import CorruptSnapshotError, StoreVersionError

__all__ = [
    "SNAPSHOT_VERSION",
    "ClientState",
    "InboxMessage",
    "LogEntry",
    "SessionRecord",
    "Snapshot",
    "decode_snapshot",
    "encode_snapshot",
]

SNAPSHOT_VERSION: Final = 1


@attrs.frozen(kw_only=True)
class ClientState:
    """One client, as a snapshot remembers it."""

    id: str
    #: Highest server seq it acknowledged.
    acked: int
    #: Highest client seq the application took (and so acknowledged).
    processed: int
    #: Highest client seq received (taken, or waiting in the inbox); at least processed.
    received: int = attrs.field(
        default=attrs.Factory(lambda self: self.processed, takes_self=True)
    )


@attrs.frozen(kw_only=True)
class InboxMessage:
    """A client message the application had not taken when the session was saved."""

    client: str
    seq: int
    data: Any


@attrs.frozen(kw_only=True)
class Snapshot:
    """A passivated session."""

    id: str
    token_hash: bytes
    principal: str | None
    #: Wall-clock time (seconds since the epoch) the session was created, and passivated.
    created: float
    passivated: float
    #: Why it was passivated (``"window_expired"``, ``"idle"``, ``"server_shutdown"``, ...).
    reason: str
    #: The application's ``session.data``.
    data: dict[str, Any]
    #: Seq of the oldest held message; ``frames`` holds it and every later one, encoded.
    first_seq: int
    frames: tuple[str, ...]
    clients: tuple[ClientState, ...]
    #: Client messages received and not yet taken, oldest first.
    inbox: tuple[InboxMessage, ...] = ()

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.frames) - 1


@attrs.frozen(kw_only=True)
class SessionRecord:
    """What a store knows about one session."""

    id: str
    #: Its last recorded lifecycle state.
    state: str
    principal: str | None
    #: Wall-clock times (seconds since the epoch).
    created: float
    last_activity: float
    #: Why it ended or was passivated, once it has.
    reason: str | None = None
    #: Whether a snapshot is held (the session can be brought back).
    snapshot: bool = False


@attrs.frozen(kw_only=True)
class LogEntry:
    """One entry of a session's event log."""

    session: str
    #: Wall-clock time (seconds since the epoch).
    time: float
    kind: Literal["transition", "message"]
    #: For a transition, the event; for a message, its direction (``"in"``, ``"out"``).
    event: str
    #: For a transition, the states it went from and to.
    source: str | None = None
    target: str | None = None
    #: For a message, its frame.
    detail: str | None = None


def encode_snapshot(snapshot: Snapshot) -> str:
    """The snapshot as one JSON document; ``TypeError`` if the application's data is not
    JSON."""
    try:
        return _encode(snapshot)
    except (TypeError, ValueError, RecursionError) as exc:
        raise TypeError(
            f"session.data of session {snapshot.id} cannot be saved: it must be JSON ({exc})"
        ) from None


def _encode(snapshot: Snapshot) -> str:
    return json.dumps(
        {
            "v": SNAPSHOT_VERSION,
            "id": snapshot.id,
            "token_hash": snapshot.token_hash.hex(),
            "principal": snapshot.principal,
            "created": snapshot.created,
            "passivated": snapshot.passivated,
            "reason": snapshot.reason,
            "data": snapshot.data,
            "first_seq": snapshot.first_seq,
            "frames": list(snapshot.frames),
            "clients": [_client(c) for c in snapshot.clients],
            **(
                {
                    "inbox": [
                        {"client": m.client, "seq": m.seq, "data": m.data} for m in snapshot.inbox
                    ]
                }
                if snapshot.inbox
                else {}
            ),
        },
        separators=(",", ":"),
        allow_nan=False,
    )


def _client(client: ClientState) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "id": client.id,
        "acked": client.acked,
        "processed": client.processed,
    }
    if client.received > client.processed:
        fields["received"] = client.received
    return fields


def _field(obj: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = obj.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise CorruptSnapshotError(
            f"snapshot field {name!r} should be {_kind_name(kind)}, found {value!r:.60}"
        )
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def decode_snapshot(text: str | bytes, *, session_id: str) -> Snapshot:
    """Read a snapshot; raise CorruptSnapshotError or StoreVersionError if it cannot be."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CorruptSnapshotError(
            f"snapshot of session {session_id} is not valid JSON: {exc}"
        ) from None
    if not isinstance(obj, dict):
        raise CorruptSnapshotError(f"snapshot of session {session_id} is not a JSON object")
    version = obj.get("v")
    if version != SNAPSHOT_VERSION:
        if isinstance(version, int) and not isinstance(version, bool) and version > 0:
            raise StoreVersionError(
                f"snapshot of session {session_id} has version {version}; this statesession "
                f"reads version {SNAPSHOT_VERSION} (was it written by a newer one?)"
            )
        raise CorruptSnapshotError(
            f"snapshot of session {session_id} has no valid version (found {version!r:.30})"
        )
    try:
        stored_id = _field(obj, "id", str)
        if stored_id != session_id:
            raise CorruptSnapshotError(
                f"snapshot stored for session {session_id} belongs to session {stored_id}"
            )
        token_hash = bytes.fromhex(_field(obj, "token_hash", str))
        principal = obj.get("principal")
        if principal is not None and not isinstance(principal, str):
            raise CorruptSnapshotError(f"snapshot field 'principal' is {principal!r:.60}")
        frames = _field(obj, "frames", list)
        if not all(isinstance(frame, str) for frame in frames):
            raise CorruptSnapshotError("snapshot field 'frames' holds a non-text frame")
        first_seq = _field(obj, "first_seq", int)
        if first_seq < 1:
            raise CorruptSnapshotError(f"snapshot field 'first_seq' is {first_seq}")
        clients = []
        for entry in _field(obj, "clients", list):
            if not isinstance(entry, dict):
                raise CorruptSnapshotError("snapshot field 'clients' holds a non-object")
            acked = _field(entry, "acked", int)
            if acked > first_seq - 1 + len(frames):
                raise CorruptSnapshotError(
                    f"snapshot client acknowledged seq {acked}, past the last message held"
                )
            processed = _field(entry, "processed", int)
            received = entry.get("received", processed)
            if isinstance(received, bool) or not isinstance(received, int) or received < processed:
                raise CorruptSnapshotError(
                    f"snapshot client's 'received' is {received!r:.30}, below what it processed"
                )
            clients.append(
                ClientState(
                    id=_field(entry, "id", str),
                    acked=acked,
                    processed=processed,
                    received=received,
                )
            )
        inbox = []
        for entry in obj.get("inbox", ()):
            if not isinstance(entry, dict) or "data" not in entry:
                raise CorruptSnapshotError("snapshot field 'inbox' holds a non-message")
            inbox.append(
                InboxMessage(
                    client=_field(entry, "client", str),
                    seq=_field(entry, "seq", int),
                    data=entry["data"],
                )
            )
        return Snapshot(
            id=stored_id,
            token_hash=token_hash,
            principal=principal,
            created=float(_field(obj, "created", (int, float))),
            passivated=float(_field(obj, "passivated", (int, float))),
            reason=_field(obj, "reason", str),
            data=_field(obj, "data", dict),
            first_seq=first_seq,
            frames=tuple(frames),
            clients=tuple(clients),
            inbox=tuple(inbox),
        )
    except ValueError as exc:  # bytes.fromhex
        raise CorruptSnapshotError(f"snapshot of session {session_id}: {exc}") from None
