"""The audit ledger: append events to the hash chain and verify it.

`record()` is the only writer. Callers invoke it inside the transaction of the change they
audit, as late as they can: on PostgreSQL it takes a transaction-level advisory lock that
serialises appenders until commit, which is what keeps the chain from forking when many
workers write at once (SQLite serialises writers by itself).
"""

import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import orjson
import psycopg
from django.db import connection, models, transaction
from django.db.models import BooleanField
from django.db.models.expressions import RawSQL
from psycopg.rows import dict_row

from . import ledger_sql
from .canonical import canonical_json, digest
from .models import GENESIS_HASH, AuditEvent

_VERIFY_BATCH = 10_000


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
        if connection.vendor == "postgresql":
            return _append_postgres(entries, lock=not ledger_locked)
        head_seq, head_hash, now = _sqlite_head_and_now()
        seq, prev_hash = (head_seq, head_hash) if head_seq is not None else (0, GENESIS_HASH)
        events = []
        for entry in entries:
            event = _event(entry)
            seq += 1
            event.seq, event.created_at, event.prev_hash = seq, now, prev_hash
            event.hash = prev_hash = chain_hash(prev_hash, event)
            events.append(event)
        AuditEvent.objects.bulk_create(events)
    return events


def _append_postgres(entries: list[Entry], *, lock: bool) -> list[AuditEvent]:
    """One round trip: a function takes the lock (unless held already), reads the head, hashes
    the events on it and inserts them (see ledger_sql)."""
    fields = [_event_fields(entry) for entry in entries]
    events = [AuditEvent(**each) for each in fields]
    with connection.cursor() as cursor:
        cursor.execute(ledger_sql.APPEND, [lock, _entries_json(fields)])
        appended = cursor.fetchall()
    for event, (seq, created_at, prev_hash, event_hash) in zip(events, appended, strict=True):
        event.seq, event.created_at, event.prev_hash, event.hash = seq, created_at, prev_hash, event_hash
        event._state.adding, event._state.db = False, connection.alias
    return events


def append_argument(entries: list[Entry]) -> str:
    """The append function's `entries` argument (a JSON array) for `entries`, for a statement of
    the caller's that appends them itself, on PostgreSQL."""
    return _entries_json([_event_fields(entry) for entry in entries])


def _entries_json(events: list[dict]) -> str:
    try:
        return orjson.dumps(events, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:  # e.g. an integer beyond 64 bits, which json writes
        return json.dumps(events)


def _event(entry: Entry) -> AuditEvent:
    """The event for `entry`, not yet placed in the chain (no seq, time or hashes)."""
    return AuditEvent(**_event_fields(entry))


def _event_fields(entry: Entry) -> dict:
    if isinstance(entry.obj, models.Model):
        ref = ObjectRef(type=entry.obj._meta.label_lower, id=str(entry.obj.pk))
    else:
        ref = entry.obj
    payload = entry.payload or {}
    return {
        "actor": str(entry.actor),
        "action": entry.action,
        "object_type": ref.type,
        "object_id": ref.id,
        "trace_id": entry.trace_id,
        "run_id": str(entry.run_id or ""),
        "release_id": entry.release_id,
        "payload": payload,
        "payload_digest": digest(payload),
    }


def chain_hash(prev_hash: str, event: AuditEvent) -> str:
    """sha256(prev_hash || canonical JSON of the event's fields)."""
    return hashlib.sha256(_hashed(prev_hash, event)).hexdigest()


def _hashed(prev_hash: str, event: AuditEvent, write_json: Callable[[Any], bytes] = canonical_json) -> bytes:
    body = {name: getattr(event, name) for name in AuditEvent.HASHED_FIELDS}
    body["created_at"] = event.created_at.astimezone(UTC).isoformat(timespec="microseconds")
    return prev_hash.encode() + write_json(body)


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

    Every event's payload digest and hash are recomputed from its content and every link and
    `seq` checked: this finds an edited field or payload (digest/hash mismatch), a deleted or
    inserted event (gap in `seq` or a broken prev_hash link) and events reordered by rewriting
    seq. `progress(checked)` is called after every batch.
    """
    tally = _Tally(progress)
    if connection.vendor != "postgresql":
        return _walk(_orm_batches(), _orm_fields_match, tally=tally)
    connection.ensure_connection()
    head = AuditEvent.objects.aggregate(head=models.Max("seq"))["head"] or 0
    # Another connection cannot see what a transaction in progress appended; outside one, a long
    # chain is checked in two halves at once, the second from the hash that the middle holds.
    if not connection.get_autocommit() or head < 2 * _VERIFY_BATCH:
        return _walk_postgres(connection.connection, tally=tally)
    middle, stop, first = head // 2, threading.Event(), None
    with ThreadPoolExecutor(max_workers=1) as pool:
        second = pool.submit(_walk_second_half, connection.get_connection_params(), middle, tally, stop)
        try:
            first = _walk_postgres(connection.connection, until=middle, tally=tally)
        finally:
            if not (first and first.ok):
                stop.set()
        if not first.ok:
            return first
        rest = second.result()
    return VerifyResult(
        ok=rest.ok, checked=first.checked + rest.checked, first_bad=rest.first_bad, reason=rest.reason
    )


class _Tally:
    """Events verified so far by one or two walkers, reported to `progress` after each batch."""

    def __init__(self, progress: Callable[[int], None] | None):
        self._progress, self._lock, self._checked = progress, threading.Lock(), 0

    def add(self, checked: int) -> None:
        if self._progress:
            with self._lock:
                self._checked += checked
                self._progress(self._checked)


def _walk(
    batches: Iterator[list[tuple]],
    fields_match: Callable[[int], bool],
    *,
    after: int = 0,
    prev_hash: str = GENESIS_HASH,
    tally: _Tally,
    stop: threading.Event | None = None,
) -> VerifyResult:
    """Check events from #after+1 on; `fields_match(seq)` rechecks a hash mismatch with the
    canonical form before it is reported."""
    sha256 = hashlib.sha256
    checked, expected_seq = 0, after + 1
    for batch in batches:
        for seq, row_prev_hash, row_hash, payload, payload_digest, hashed in batch:
            if seq != expected_seq:
                problem = f"sequence gap: expected #{expected_seq}"
            elif row_prev_hash != prev_hash:
                problem = "link to the previous event is broken"
            elif not _digest_matches(payload, payload_digest):
                problem = "payload does not match its digest"
            elif not (sha256(hashed).hexdigest() == row_hash or fields_match(seq)):
                problem = "event fields do not match its hash"
            else:
                checked += 1
                expected_seq, prev_hash = seq + 1, row_hash
                continue
            return VerifyResult(ok=False, checked=checked, first_bad=seq, reason=problem)
        tally.add(len(batch))
        if stop and stop.is_set():
            break
    return VerifyResult(ok=True, checked=checked, first_bad=None)


def _walk_postgres(
    database: psycopg.Connection,
    *,
    after: int = 0,
    until: int | None = None,
    prev_hash: str = GENESIS_HASH,
    tally: _Tally,
    stop: threading.Event | None = None,
) -> VerifyResult:
    with database.pipeline():
        return _walk(
            _postgres_batches(database, after, until),
            partial(_postgres_fields_match, database),
            after=after,
            prev_hash=prev_hash,
            tally=tally,
            stop=stop,
        )


def _walk_second_half(params: dict, middle: int, tally: _Tally, stop: threading.Event) -> VerifyResult:
    """Events after #middle, on a connection of their own (made with `params`), from the hash
    that #middle holds (the first half recomputes it)."""
    with psycopg.connect(**params, autocommit=True) as database:
        cursor = database.cursor(row_factory=dict_row)
        event = cursor.execute(ledger_sql.EVENT_AT, [middle], prepare=False).fetchone()
        if event is None:  # the first half reports the gap
            return VerifyResult(ok=True, checked=0, first_bad=None)
        return _walk_postgres(database, after=middle, prev_hash=event["hash"], tally=tally, stop=stop)


def _postgres_batches(database: psycopg.Connection, after: int, until: int | None) -> Iterator[list[tuple]]:
    """Batches of events after #after (through #until at least) in seq order. The query for the
    next batch goes out before this one is handed over (pipeline mode), so the database reads it
    while Python hashes this one."""
    with psycopg.Cursor(database) as cursor:

        def send(after: int) -> int:
            limit = _VERIFY_BATCH if until is None else min(_VERIFY_BATCH, until - after)
            cursor.execute(ledger_sql.VERIFY_BATCH, [after, limit], binary=True, prepare=False)
            return limit

        limit = send(after)
        while batch := cursor.fetchall():
            last = batch[-1][0]
            more = len(batch) == limit and (until is None or last < until)
            if more:
                limit = send(last)
            yield batch
            if not more:
                return


def _postgres_fields_match(database: psycopg.Connection, seq: int) -> bool:
    with psycopg.Cursor(database, row_factory=dict_row) as cursor:
        cursor.execute(f"SELECT * FROM {AuditEvent._meta.db_table} WHERE seq = %s", [seq], prepare=False)  # noqa: S608
        event = AuditEvent(**cursor.fetchone())
    return chain_hash(event.prev_hash, event) == event.hash


def _orm_batches() -> Iterator[list[tuple]]:
    after = 0
    while True:
        events = list(AuditEvent.objects.filter(seq__gt=after).order_by("seq")[:_VERIFY_BATCH])
        if not events:
            return
        yield [
            (e.seq, e.prev_hash, e.hash, e.payload, e.payload_digest, _hashed(e.prev_hash, e, _sorted_orjson))
            for e in events
        ]
        after = events[-1].seq


def _sorted_orjson(value: Any) -> bytes:
    """RFC 8785's bytes for strings, integers, booleans and nulls, many times faster."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _orm_fields_match(seq: int) -> bool:
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
    if hashlib.sha256(_sorted_orjson(payload)).hexdigest() == expected:
        return True
    return digest(payload) == expected


def _sqlite_head_and_now() -> tuple[int | None, str | None, datetime]:
    """The chain's head (it may not exist yet) and the database clock, in one round trip."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT h.seq, h.hash, strftime('%Y-%m-%dT%H:%M:%f', 'now') FROM (SELECT 1) AS one LEFT JOIN "  # noqa: S608
            f"(SELECT seq, hash FROM {ledger_sql.LEDGER} ORDER BY seq DESC LIMIT 1) AS h ON 1"
        )
        head_seq, head_hash, now = cursor.fetchone()
    return head_seq, head_hash, datetime.fromisoformat(now).replace(tzinfo=UTC)


def ledger_lock_condition() -> list[RawSQL]:
    """A WHERE condition (always true) that takes the ledger's lock as a side effect, to fold
    the lock into a statement the caller sends just before appending, saving a round trip.
    Only the statement after it reads the chain head, so that read sees the latest append."""
    if connection.vendor != "postgresql":
        return []  # SQLite serialises writers by itself
    key = ledger_sql.LEDGER_LOCK_KEY
    return [RawSQL("pg_advisory_xact_lock(%s) IS NOT NULL", [key], output_field=BooleanField())]
