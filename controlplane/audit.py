"""The audit ledger: append events to the hash chain and verify it.

`record()` is the only writer. Callers invoke it inside the transaction of the change they
audit, as late as they can: on PostgreSQL it takes a transaction-level advisory lock that
serialises appenders until commit, which is what keeps the chain from forking when many
workers write at once (SQLite serialises writers by itself).
"""

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from django.db import connection, models, transaction
from django.db.models import BooleanField
from django.db.models.expressions import RawSQL

from .canonical import canonical_json, digest
from .models import GENESIS_HASH, AuditEvent

# Any constant works; it only has to be the same in every process that appends.
_LEDGER_LOCK_KEY = 0x6261746F6E  # "baton"
_VERIFY_BATCH = 10_000
# What an event's hash covers (the payload through its digest), in this order.
_HASHED_FIELDS = (
    "seq", "created_at", "actor", "action", "object_type", "object_id", "trace_id", "run_id", "release_id",
    "payload_digest",
)  # fmt: skip


@dataclass(frozen=True)
class ObjectRef:
    """What an event is about, when it is not a model instance (or no longer exists)."""

    type: str
    id: str


@dataclass(frozen=True)
class Entry:
    """One event to append: what `record()` takes, as a value, so several go in one append."""

    actor: Any
    action: str
    obj: models.Model | ObjectRef
    payload: dict | None = None
    trace_id: str = ""
    run_id: Any = ""
    release_id: str = ""


def record(
    actor: Any,
    action: str,
    obj: models.Model | ObjectRef,
    payload: dict | None = None,
    *,
    trace_id: str = "",
    run_id: Any = "",
    release_id: str = "",
) -> AuditEvent:
    """Append one event to the ledger and return it."""
    return record_many([Entry(actor, action, obj, payload, trace_id, run_id, release_id)])[0]


def record_many(entries: list[Entry], *, ledger_locked: bool = False) -> list[AuditEvent]:
    """Append events in order, in one INSERT under the chain lock (they share the database time).

    `ledger_locked`: the caller took the lock in this transaction already, with a statement it
    sent anyway (see `ledger_lock_condition`)."""
    # Inside a caller's transaction no savepoint is needed: a failed append fails the change it audits.
    with transaction.atomic(savepoint=False):
        if not ledger_locked:
            _lock_ledger()
        head_seq, head_hash, now = _head_and_now()
        seq, prev_hash = (head_seq, head_hash) if head_seq is not None else (0, GENESIS_HASH)
        events = []
        for entry in entries:
            seq += 1
            event = _event(entry, seq, now, prev_hash)
            prev_hash = event.hash
            events.append(event)
        AuditEvent.objects.bulk_create(events)
    return events


def _event(entry: Entry, seq: int, now: datetime, prev_hash: str) -> AuditEvent:
    if isinstance(entry.obj, models.Model):
        ref = ObjectRef(type=entry.obj._meta.label_lower, id=str(entry.obj.pk))
    else:
        ref = entry.obj
    payload = entry.payload or {}
    event = AuditEvent(
        seq=seq,
        created_at=now,
        actor=str(entry.actor),
        action=entry.action,
        object_type=ref.type,
        object_id=ref.id,
        trace_id=entry.trace_id,
        run_id=str(entry.run_id or ""),
        release_id=entry.release_id,
        payload=payload,
        payload_digest=digest(payload),
        prev_hash=prev_hash,
    )
    event.hash = chain_hash(prev_hash, event)
    return event


def chain_hash(prev_hash: str, event: AuditEvent) -> str:
    """sha256(prev_hash || canonical JSON of the event's fields)."""
    body = {name: getattr(event, name) for name in _HASHED_FIELDS}
    body["created_at"] = event.created_at.astimezone(UTC).isoformat(timespec="microseconds")
    return hashlib.sha256(prev_hash.encode() + canonical_json(body)).hexdigest()


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    first_bad: int | None
    reason: str = ""

    def as_dict(self) -> dict:
        return {"ok": self.ok, "checked": self.checked, "first_bad": self.first_bad, "reason": self.reason}


def verify_chain(progress: Callable[[int], None] | None = None) -> VerifyResult:
    """Walk the whole chain in order, in bounded memory, and report the first broken event.

    Finds an edited field or payload (digest/hash mismatch), a deleted or inserted event
    (gap in `seq` or a broken prev_hash link) and events reordered by rewriting seq.
    `progress(checked)` is called after every batch.
    """
    checked = 0
    expected_seq, prev_hash = 1, GENESIS_HASH
    batches = _postgres_batches() if connection.vendor == "postgresql" else _orm_batches()
    for batch in batches:
        for seq, row_prev_hash, row_hash, payload, payload_digest, fields_match in batch:
            if seq != expected_seq:
                problem = f"sequence gap: expected #{expected_seq}"
            elif row_prev_hash != prev_hash:
                problem = "link to the previous event is broken"
            elif not _digest_matches(payload, payload_digest):
                problem = "payload does not match its digest"
            elif not (fields_match or _fields_match(seq)):
                problem = "event fields do not match its hash"
            else:
                checked += 1
                expected_seq, prev_hash = seq + 1, row_hash
                continue
            return VerifyResult(ok=False, checked=checked, first_bad=seq, reason=problem)
        if progress:
            progress(checked)
    return VerifyResult(ok=True, checked=checked, first_bad=None)


# On PostgreSQL the database rebuilds each event's canonical JSON (keys in RFC 8785 order;
# to_json escapes strings as RFC 8785 does) and hashes it, so Python only checks the links and
# payload digests. Where the database's bytes could differ, a mismatch is rechecked in Python
# with the canonical form before it is reported.
_POSTGRES_BATCH = f"""
    SELECT seq, prev_hash, hash, payload::text, payload_digest,
           hash = encode(sha256(convert_to(
               prev_hash || '{{"action":' || to_json(action)::text || ',"actor":' || to_json(actor)::text
               || ',"created_at":"' || to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US')
               || '+00:00","object_id":' || to_json(object_id)::text
               || ',"object_type":' || to_json(object_type)::text
               || ',"payload_digest":' || to_json(payload_digest)::text
               || ',"release_id":' || to_json(release_id)::text || ',"run_id":' || to_json(run_id)::text
               || ',"seq":' || seq::text || ',"trace_id":' || to_json(trace_id)::text || '}}',
               'UTF8')), 'hex')
    FROM {AuditEvent._meta.db_table} WHERE seq > %s ORDER BY seq LIMIT {_VERIFY_BATCH}
"""  # noqa: S608


def _postgres_batches():
    after = 0
    while True:
        with connection.cursor() as cursor:
            cursor.execute(_POSTGRES_BATCH, [after])
            batch = cursor.fetchall()
        if not batch:
            return
        yield batch
        after = batch[-1][0]


def _orm_batches():
    after = 0
    while True:
        events = list(AuditEvent.objects.filter(seq__gt=after).order_by("seq")[:_VERIFY_BATCH])
        if not events:
            return
        yield [
            (e.seq, e.prev_hash, e.hash, e.payload, e.payload_digest, chain_hash(e.prev_hash, e) == e.hash)
            for e in events
        ]
        after = events[-1].seq


def _fields_match(seq: int) -> bool:
    event = AuditEvent.objects.get(seq=seq)
    return chain_hash(event.prev_hash, event) == event.hash


def _digest_matches(payload: Any, expected: str) -> bool:
    """Does the payload (a value, or JSON text from the database) have this digest?

    orjson with sorted keys writes the RFC 8785 form of most payloads (strings, integers,
    booleans, nulls, ASCII keys) many times faster; when its bytes differ, the canonical form
    decides. Its bytes always parse back to the payload, so a match is never wrong.
    """
    if isinstance(payload, str):
        try:
            payload = orjson.loads(payload)
        except orjson.JSONDecodeError:  # e.g. an integer beyond 64 bits
            payload = json.loads(payload)
    if hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest() == expected:
        return True
    return digest(payload) == expected


def _head_and_now() -> tuple[int | None, str | None, datetime]:
    """The chain's head and the database clock, in one round trip (the head may not exist yet)."""
    table = AuditEvent._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"SELECT h.seq, h.hash, clock_timestamp() FROM (SELECT 1) AS one LEFT JOIN "  # noqa: S608
                f"(SELECT seq, hash FROM {table} ORDER BY seq DESC LIMIT 1) AS h ON true"
            )
            return cursor.fetchone()
        cursor.execute(
            f"SELECT h.seq, h.hash, strftime('%Y-%m-%dT%H:%M:%f', 'now') FROM (SELECT 1) AS one LEFT JOIN "  # noqa: S608
            f"(SELECT seq, hash FROM {table} ORDER BY seq DESC LIMIT 1) AS h ON 1"
        )
        head_seq, head_hash, now = cursor.fetchone()
        return head_seq, head_hash, datetime.fromisoformat(now).replace(tzinfo=UTC)


def ledger_lock_condition() -> list[RawSQL]:
    """A WHERE condition (always true) that takes the ledger's lock as a side effect, to fold
    the lock into a statement the caller sends just before appending, saving a round trip.
    Only the statement after it reads the chain head, so that read sees the latest append."""
    if connection.vendor != "postgresql":
        return []  # SQLite serialises writers by itself
    return [RawSQL("pg_advisory_xact_lock(%s) IS NOT NULL", [_LEDGER_LOCK_KEY], output_field=BooleanField())]


def _lock_ledger() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LEDGER_LOCK_KEY])
