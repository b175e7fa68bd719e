"""The audit ledger's statements on PostgreSQL, where the database writes what an event's hash covers.

An event's hash is sha256(prev_hash || canonical JSON of its fields): keys in RFC 8785 order and
strings escaped as RFC 8785 escapes them, which is what to_json does for text. Building those
bytes in SQL lets one statement read the chain head and append after it (no round trip to
hash in Python between the two), and lets verification hash rows without decoding them.
`chain_hash` in audit.py is the same function in Python; tests hold the two byte for byte.
"""

from collections.abc import Callable

from .models import GENESIS_HASH, AuditEvent

LEDGER = AuditEvent._meta.db_table
# Any constant works; it only has to be the same in every process that appends.
LEDGER_LOCK_KEY = 0x6261746F6E  # "baton"
# The JSON keys in RFC 8785 order (the names are ASCII, so plain sorting); all but two are text.
_KEY_ORDER = sorted(AuditEvent.HASHED_FIELDS)
_HASHED_TEXT_FIELDS = [name for name in _KEY_ORDER if name not in ("created_at", "seq")]


class _Literal(str):
    """Text that goes into the SQL quoted, merged with the literals beside it."""


def _concat(pieces: list[str]) -> str:
    merged: list[str] = []
    for piece in pieces:
        if merged and isinstance(piece, _Literal) and isinstance(merged[-1], _Literal):
            merged[-1] = _Literal(merged[-1] + piece)
        else:
            merged.append(piece)
    return " || ".join("'" + p.replace("'", "''") + "'" if isinstance(p, _Literal) else p for p in merged)


def quoted(field: str) -> list[str]:
    """A text field as a JSON string, when it needs no escaping."""
    return [_Literal('"'), field, _Literal('"')]


def to_json(field: str) -> list[str]:
    """A text field as a JSON string, escaped as RFC 8785 escapes it."""
    return [f"to_json({field})::text"]


def hashed_bytes(prev_hash: str, text: Callable[[str], list[str]], created_at: str, seq: str) -> str:
    """SQL for the bytes an event's hash covers. `text(field)` writes a text field as a JSON
    string (`quoted` or `to_json`); `created_at` and `seq` are the event's time and position."""
    # What Python's isoformat(timespec="microseconds") writes for a UTC time.
    utc_iso = f"to_char({created_at} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"
    values = {"created_at": [_Literal('"'), utc_iso, _Literal('+00:00"')], "seq": [f"({seq})::text"]}
    pieces = [prev_hash, _Literal("{")]
    for number, key in enumerate(_KEY_ORDER):
        pieces += [_Literal(f'{"," if number else ""}"{key}":'), *values.get(key, text(key))]
    return f"convert_to({_concat([*pieces, _Literal('}')])}, 'UTF8')"


ENTRY_FIELDS = (
    "actor", "action", "object_type", "object_id", "trace_id", "run_id", "release_id", "payload",
    "payload_digest",
)  # fmt: skip
# Appending: a PL/pgSQL function keeps its statements' plans for the session (an equivalent
# plain statement costs the database more to plan than to run), takes the lock and reads the
# head in one round trip, and hashes with the same SQL as verification. It takes the entries as
# one JSON array of objects keyed by ENTRY_FIELDS: one parameter, where an array per field cost
# the client more to send than the database to append. Migrations install it, so a change here
# needs a migration that installs it again.
APPEND = "SELECT * FROM baton_audit_append(%s, %s::jsonb)"
_APPEND_FUNCTION = f"""
    CREATE OR REPLACE FUNCTION baton_audit_append(take_lock boolean, entries jsonb) RETURNS TABLE (
        appended_seq bigint, appended_at timestamptz, appended_prev_hash text, appended_hash text
    )
    LANGUAGE plpgsql VOLATILE AS $$
    DECLARE
        head_seq bigint;
        head_hash text;
        at_time timestamptz;
        entry jsonb;
    BEGIN
        IF take_lock THEN
            PERFORM pg_advisory_xact_lock({LEDGER_LOCK_KEY:d});
        END IF;
        -- Each statement of a volatile function takes a fresh snapshot: read after the lock,
        -- the head is the last committed append.
        SELECT e.seq, e.hash INTO head_seq, head_hash FROM {LEDGER} AS e ORDER BY e.seq DESC LIMIT 1;
        head_seq := COALESCE(head_seq, 0);
        head_hash := COALESCE(head_hash, '{GENESIS_HASH}');
        at_time := clock_timestamp();
        FOR entry IN SELECT value FROM jsonb_array_elements(entries) LOOP
            appended_prev_hash := head_hash;
            head_seq := head_seq + 1;
            head_hash := encode(sha256({{event_bytes}}), 'hex');
            INSERT INTO {LEDGER} (seq, created_at, {", ".join(ENTRY_FIELDS)}, prev_hash, hash)
            VALUES (head_seq, at_time, {{entry_values}}, appended_prev_hash, head_hash);
            appended_seq := head_seq;
            appended_at := at_time;
            appended_hash := head_hash;
            RETURN NEXT;
        END LOOP;
    END
    $$
"""  # noqa: S608


def install_append_function(cursor) -> None:
    """Create (or replace) baton_audit_append; PostgreSQL only."""
    entry_values = ", ".join(
        f"entry->'{field}'" if field == "payload" else f"entry->>'{field}'" for field in ENTRY_FIELDS
    )
    event_bytes = hashed_bytes(
        "appended_prev_hash", lambda field: to_json(f"(entry->>'{field}')"), "at_time", "head_seq"
    )
    cursor.execute(_APPEND_FUNCTION.format(event_bytes=event_bytes, entry_values=entry_values))


def drop_append_function(cursor) -> None:
    cursor.execute("DROP FUNCTION IF EXISTS baton_audit_append(boolean, jsonb)")


# Verification: to_json is the costly part and most events need no escaping. When escaping all
# the text fields at once adds only the two quotes, plain concatenation writes the same bytes.
# LIMIT rather than an upper bound on seq keeps the plan an index scan whatever the statistics say.
_ALL_TEXT = " || ".join(_HASHED_TEXT_FIELDS)
VERIFY_BATCH = f"""
    SELECT seq, prev_hash, hash, payload::text, payload_digest,
        CASE WHEN octet_length(to_json({_ALL_TEXT})::text) = octet_length({_ALL_TEXT}) + 2
        THEN {hashed_bytes("prev_hash", quoted, "created_at", "seq")}
        ELSE {hashed_bytes("prev_hash", to_json, "created_at", "seq")}
        END
    FROM {LEDGER} WHERE seq > %s ORDER BY seq LIMIT %s
"""  # noqa: S608
EVENT_AT = f"SELECT * FROM {LEDGER} WHERE seq = %s"  # noqa: S608
