"""The audit ledger: append events to the hash chain and verify it.

`record()` is the only writer. Callers invoke it inside the transaction of the change they
audit, as late as they can: on PostgreSQL it takes a transaction-level advisory lock that
serialises appenders until commit, which is what keeps the chain from forking when many
workers write at once (SQLite serialises writers by itself).
"""

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import connection, models, transaction
from django.db.models import BooleanField
from django.db.models.expressions import RawSQL

from .canonical import canonical_json, digest
from .models import GENESIS_HASH, AuditEvent

# Any constant works; it only has to be the same in every process that appends.
_LEDGER_LOCK_KEY = 0x6261746F6E  # "baton"
_VERIFY_BATCH = 5000


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
    body = {
        "seq": event.seq,
        "created_at": event.created_at.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor": event.actor,
        "action": event.action,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "trace_id": event.trace_id,
        "run_id": event.run_id,
        "release_id": event.release_id,
        "payload_digest": event.payload_digest,
    }
    return hashlib.sha256(prev_hash.encode() + canonical_json(body)).hexdigest()


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    first_bad: int | None
    reason: str = ""

    def as_dict(self) -> dict:
        return {"ok": self.ok, "checked": self.checked, "first_bad": self.first_bad, "reason": self.reason}


def verify_chain() -> VerifyResult:
    """Walk the whole chain in order, in bounded memory, and report the first broken event.

    Finds an edited field or payload (digest/hash mismatch), a deleted or inserted event
    (gap in `seq` or a broken prev_hash link) and events reordered by rewriting seq.
    """
    checked = 0
    expected_seq, prev_hash = 1, GENESIS_HASH
    events = AuditEvent.objects.order_by("seq").iterator(chunk_size=_VERIFY_BATCH)
    for event in events:
        problem = _event_problem(event, expected_seq, prev_hash)
        if problem:
            return VerifyResult(ok=False, checked=checked, first_bad=event.seq, reason=problem)
        checked += 1
        expected_seq, prev_hash = event.seq + 1, event.hash
    return VerifyResult(ok=True, checked=checked, first_bad=None)


def _event_problem(event: AuditEvent, expected_seq: int, prev_hash: str) -> str:
    if event.seq != expected_seq:
        return f"sequence gap: expected #{expected_seq}"
    if event.prev_hash != prev_hash:
        return "link to the previous event is broken"
    if digest(event.payload) != event.payload_digest:
        return "payload does not match its digest"
    if chain_hash(prev_hash, event) != event.hash:
        return "event fields do not match its hash"
    return ""


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
