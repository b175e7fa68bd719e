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
        head_seq, head_hash, now = _head_and_now(lock=not ledger_locked)
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
    return hashlib.sha256(_hashed(prev_hash, event)).hexdigest()


def _hashed(prev_hash: str, event: AuditEvent, write_json: Callable[[Any], bytes] = canonical_json) -> bytes:
    body = {name: getattr(event, name) for name in _HASHED_FIELDS}
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
        event = database.cursor(row_factory=dict_row).execute(_EVENT_AT, [middle], prepare=False).fetchone()
        if event is None:  # the first half reports the gap
            return VerifyResult(ok=True, checked=0, first_bad=None)
        return _walk_postgres(database, after=middle, prev_hash=event["hash"], tally=tally, stop=stop)


# On PostgreSQL the database writes what each event's hash covers (prev_hash, then the canonical
# JSON of its fields: keys in RFC 8785 order, strings escaped by to_json as RFC 8785 does) and
# Python hashes it, which costs less than hashing in the database. to_json is the costly part
# and most events need no escaping: when escaping all the text fields at once adds only the two
# quotes, plain concatenation writes the same bytes. LIMIT rather than an upper bound on seq
# keeps the plan an index scan whatever the statistics say.
_CREATED_AT = "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"
_TEXT_FIELDS = (
    "action || actor || object_id || object_type || payload_digest || release_id || run_id || trace_id"
)
_POSTGRES_BATCH = f"""
    SELECT seq, prev_hash, hash, payload::text, payload_digest, convert_to(
        CASE WHEN octet_length(to_json({_TEXT_FIELDS})::text) = octet_length({_TEXT_FIELDS}) + 2
        THEN prev_hash || '{{"action":"' || action || '","actor":"' || actor
            || '","created_at":"' || {_CREATED_AT} || '+00:00","object_id":"' || object_id
            || '","object_type":"' || object_type || '","payload_digest":"' || payload_digest
            || '","release_id":"' || release_id || '","run_id":"' || run_id
            || '","seq":' || seq || ',"trace_id":"' || trace_id || '"}}'
        ELSE prev_hash || '{{"action":' || to_json(action)::text || ',"actor":' || to_json(actor)::text
            || ',"created_at":"' || {_CREATED_AT} || '+00:00","object_id":' || to_json(object_id)::text
            || ',"object_type":' || to_json(object_type)::text
            || ',"payload_digest":' || to_json(payload_digest)::text
            || ',"release_id":' || to_json(release_id)::text || ',"run_id":' || to_json(run_id)::text
            || ',"seq":' || seq || ',"trace_id":' || to_json(trace_id)::text || '}}'
        END, 'UTF8')
    FROM {AuditEvent._meta.db_table} WHERE seq > %s ORDER BY seq LIMIT %s
"""  # noqa: S608
_EVENT_AT = f"SELECT * FROM {AuditEvent._meta.db_table} WHERE seq = %s"  # noqa: S608


def _postgres_batches(database: psycopg.Connection, after: int, until: int | None) -> Iterator[list[tuple]]:
    """Batches of events after #after (through #until at least) in seq order. The query for the
    next batch goes out before this one is handed over (pipeline mode), so the database reads it
    while Python hashes this one."""
    with psycopg.Cursor(database) as cursor:

        def send(after: int) -> int:
            limit = _VERIFY_BATCH if until is None else min(_VERIFY_BATCH, until - after)
            cursor.execute(_POSTGRES_BATCH, [after, limit], binary=True, prepare=False)
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


def _head_and_now(*, lock: bool) -> tuple[int | None, str | None, datetime]:
    """The chain's head and the database clock, in one round trip (the head may not exist yet);
    with `lock`, the ledger's lock is taken first in the same round trip."""
    table = AuditEvent._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            head = (
                f"SELECT h.seq, h.hash, clock_timestamp() FROM (SELECT 1) AS one LEFT JOIN "  # noqa: S608
                f"(SELECT seq, hash FROM {table} ORDER BY seq DESC LIMIT 1) AS h ON true"
            )
            if not lock:
                cursor.execute(head)
                return cursor.fetchone()
            # Two statements in one message: under READ COMMITTED each takes its own snapshot, so
            # the head is read after the lock is held and sees the last committed append.
            cursor.execute(f"SELECT pg_advisory_xact_lock({_LEDGER_LOCK_KEY:d}); {head}")
            cursor.nextset()
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
