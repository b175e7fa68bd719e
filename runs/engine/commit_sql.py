"""A step's commit on PostgreSQL as one statement, which is its own transaction.

Everything a completed step writes goes to the database in one call of a PL/pgSQL function:
the lease check (row lock), the effect's result, the transition decision's log row, the
checkpoint, the run's next state and the audit events (through the ledger's append function).
Sent outside any transaction block, the call commits by itself: one round trip and one commit
per step, where the same writes sent one by one cost six round trips (BEGIN, four statements,
COMMIT). A function rather than one plain statement because it keeps its plans for the session.

The rows travel as JSON objects keyed by column and are read back with
jsonb_populate_record, so the columns they fill are named once, from the models, when the
function is installed: a migration that changes runs_run, runs_stepcheckpoint, runs_effect or
policy_policydecision must install the function again (as 0011 does) with its own models.

The run's claim is such a function too, and a tool call's decision with its write-ahead intent
is one plain statement (TOOL_DECISION), whose columns are read from the models as they are.
"""

import functools
import json
from collections.abc import Sequence
from typing import Any

import orjson
import psycopg
from django.db import connection, models

from policy.models import PolicyDecision

from ..models import Effect, PendingAction, Run
from .common import WORKER

# What the function answers, beside the database time it read under the row lock.
COMMITTED = "committed"
LEASE_LOST = "lease_lost"  # cancelled or swept meanwhile: nothing but the effect's result is written
LATE = "late"  # the deadline passed between the decision's time and the commit: decide again

# The function's argument types, in order; the audit entries last, as the ledger's append takes them.
_SIGNATURE = (
    "uuid", "text", "timestamptz", "double precision", "jsonb", "jsonb", "bigint", "jsonb", "text", "text",
    "jsonb", "boolean", "jsonb",
)  # fmt: skip
STEP_COMMIT = f"SELECT * FROM baton_step_commit({', '.join(f'%s::{kind}' for kind in _SIGNATURE)})"  # noqa: S608

# A run's claim, also one statement: the lease taken if free or expired, the run read under it
# and, for a queued run, its start (status and event) in the same transaction; for a run that
# goes on from its checkpoints, those too (state and output, in order), read under the lease.
# The columns in the model's field order, so that a row makes a Run as it is (see claimed_run).
CLAIM = (
    f"SELECT {', '.join(f'(c.claimed).{field.column}' for field in Run._meta.concrete_fields)}, "  # noqa: S608
    "c.checkpoints FROM baton_run_claim(%s::uuid, %s::text, %s::double precision) AS c"
)
# A run whose worker died while compensating is resumed like a running one: it goes on undoing.
RESUMABLE_STATUSES = (*Run.ACTIVE_STATUSES, Run.Status.COMPENSATING)


class _PreparingCursor(psycopg.Cursor):
    """Prepares what it executes: the engine's statements are few and always the same text."""

    def execute(self, query, params=None, *, prepare=None, binary=None):
        return super().execute(query, params, prepare=True if prepare is None else prepare, binary=binary)


def server_binding_cursor():
    """A cursor that sends the parameters apart from the statement (Django's own bind them into
    its text): the rows' JSON is not escaped into a literal, and the statement, always the same
    text, is prepared once per connection (Django's connections prepare nothing)."""
    connection.ensure_connection()
    cursor = _PreparingCursor(connection.connection)
    wrap = connection.make_debug_cursor if connection.queries_logged else connection.make_cursor
    return wrap(cursor)


@functools.cache
def _converters(model: type[models.Model]) -> list[tuple[int, Any]]:
    # Django reads JSON columns as text and decodes them in the field's from_db_value.
    return [
        (position, field.from_db_value)
        for position, field in enumerate(model._meta.concrete_fields)
        if hasattr(field, "from_db_value")
    ]


def instance_from_row(model: type[models.Model], values: Sequence[Any]) -> models.Model:
    """The instance of `model` whose columns, in its fields' order, a raw statement read: what
    a queryset would have made of them, without compiling one."""
    values = list(values)
    for position, convert in _converters(model):
        values[position] = convert(values[position], None, connection)
    return model.from_db(connection.alias, None, values)


def claimed_run(row: tuple) -> tuple[Run, list[tuple[str, Any]] | None]:
    """The Run of a CLAIM row and its checkpoints' (state, output) in order: None unless it is
    running and has made some."""
    checkpoints = row[-1]
    return instance_from_row(Run, row[:-1]), (
        None if checkpoints is None else [tuple(pair) for pair in json.loads(checkpoints)]
    )


def inserted_fields(model: type[models.Model]) -> list[models.Field]:
    """The columns an insert names: the database fills the key and the columns with defaults."""
    return [f for f in model._meta.concrete_fields if not f.primary_key and not f.has_db_default()]


def inserted_columns(model: type[models.Model]) -> str:
    """The column list of an insert of `model`'s rows (see `inserted_fields`)."""
    return ", ".join(field.column for field in inserted_fields(model))


def json_argument(value: Any) -> str:
    """A row or document as a statement's jsonb argument."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


# A tool call's decision and what it allows, also one statement, before the call: the tool.call
# decision's log row; whether the exact action was approved, when policy asks for an approval;
# and, for a write that may go ahead, its write-ahead intent (the idempotency key's row; none
# when a first attempt wrote it). Answers (decision id, approved, the intent's id or NULL).
TOOL_DECISION = f"""
    WITH decision AS (
        INSERT INTO {PolicyDecision._meta.db_table} ({inserted_columns(PolicyDecision)})
        SELECT {inserted_columns(PolicyDecision)}
        FROM jsonb_populate_record(NULL::{PolicyDecision._meta.db_table}, %(decision)s::jsonb)
        RETURNING id
    ), approval AS (
        SELECT %(action_hash)s::text IS NULL OR EXISTS (
            SELECT FROM {PendingAction._meta.db_table} AS p
            WHERE p.run_id = %(run)s::uuid AND p.state = %(state)s::text
                AND p.action_hash = %(action_hash)s::text AND p.status = '{PendingAction.Status.APPROVED}'
        ) AS granted
    ), intent AS (
        INSERT INTO {Effect._meta.db_table} ({inserted_columns(Effect)})
        SELECT {inserted_columns(Effect)}
        FROM jsonb_populate_record(NULL::{Effect._meta.db_table}, %(intent)s::jsonb)
        WHERE %(intent)s::jsonb IS NOT NULL AND (SELECT granted FROM approval)
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING id
    )
    SELECT (SELECT id FROM decision), (SELECT granted FROM approval), (SELECT id FROM intent)
"""  # noqa: S608


_FUNCTION = """
    CREATE OR REPLACE FUNCTION baton_step_commit(
        run_pk uuid, lease_token text, decided_at timestamptz, lease_seconds double precision,
        decision_row jsonb, checkpoint_row jsonb,
        effect_pk bigint, effect_result jsonb, effect_ref text,
        next_state text, spent_now jsonb, finishes boolean, entries jsonb
    ) RETURNS TABLE (outcome text, committed_at timestamptz)
    LANGUAGE plpgsql VOLATILE AS $$
    DECLARE
        owner text;
        run_deadline timestamptz;
    BEGIN
        SELECT r.lease_owner, r.deadline INTO owner, run_deadline
        FROM {run} AS r WHERE r.id = run_pk FOR UPDATE;
        committed_at := clock_timestamp();
        -- What the tool did is kept whatever becomes of the run.
        IF effect_pk IS NOT NULL THEN
            UPDATE {effect} AS e SET status = '{effect_committed}', result = effect_result,
                effect_id = effect_ref, updated_at = committed_at
            WHERE e.id = effect_pk;
        END IF;
        IF owner IS DISTINCT FROM lease_token THEN
            outcome := '{lease_lost}';
            RETURN NEXT;
            RETURN;
        END IF;
        IF decision_row IS NOT NULL THEN
            INSERT INTO {decision} ({decision_columns})
            SELECT {decision_columns} FROM jsonb_populate_record(NULL::{decision}, decision_row);
        END IF;
        -- Decided in time but committing late: the decision stays logged, and nothing else.
        IF decided_at <= run_deadline AND committed_at > run_deadline THEN
            outcome := '{late}';
            RETURN NEXT;
            RETURN;
        END IF;
        INSERT INTO {checkpoint} ({checkpoint_columns})
        SELECT {checkpoint_columns} FROM jsonb_populate_record(NULL::{checkpoint}, checkpoint_row);
        UPDATE {run} AS r SET
            spent = spent_now, step_attempts = 0, claims_since_progress = 0,
            hop_count = r.hop_count + 1, updated_at = committed_at,
            current_state = CASE WHEN finishes THEN r.current_state ELSE next_state END,
            status = CASE WHEN finishes THEN '{succeeded}' ELSE r.status END,
            finished_at = CASE WHEN finishes THEN committed_at ELSE r.finished_at END,
            lease_owner = CASE WHEN finishes THEN '' ELSE r.lease_owner END,
            lease_expires_at = CASE WHEN finishes THEN NULL
                ELSE committed_at + make_interval(secs => lease_seconds) END
        WHERE r.id = run_pk;
        PERFORM count(*) FROM baton_audit_append(true, entries);
        outcome := '{committed}';
        RETURN NEXT;
    END
    $$
"""


def install_step_commit_function(cursor, apps) -> None:
    """Create (or replace) baton_step_commit for the tables of `apps` (a migration's models)."""
    run, checkpoint = apps.get_model("runs", "Run"), apps.get_model("runs", "StepCheckpoint")
    effect, decision = apps.get_model("runs", "Effect"), apps.get_model("policy", "PolicyDecision")

    cursor.execute(
        _FUNCTION.format(
            run=run._meta.db_table,
            effect=effect._meta.db_table,
            decision=decision._meta.db_table,
            checkpoint=checkpoint._meta.db_table,
            decision_columns=inserted_columns(decision),
            checkpoint_columns=inserted_columns(checkpoint),
            effect_committed="committed",
            succeeded="succeeded",
            lease_lost=LEASE_LOST,
            late=LATE,
            committed=COMMITTED,
        )
    )


def drop_step_commit_function(cursor) -> None:
    cursor.execute(f"DROP FUNCTION IF EXISTS baton_step_commit({', '.join(_SIGNATURE)})")


# The run.started event's payload is {"state": ...}: its digest, the sha256 of its canonical
# JSON, is written here as canonical.digest writes it (to_json escapes text as RFC 8785 does).
_CLAIM_FUNCTION = """
    CREATE FUNCTION baton_run_claim(run_pk uuid, lease_token text, lease_seconds double precision)
    RETURNS TABLE (claimed {run}, checkpoints jsonb) LANGUAGE plpgsql VOLATILE AS $$
    DECLARE
        previous text;
    BEGIN
        SELECT r.status INTO previous FROM {run} AS r
        WHERE r.id = run_pk AND r.status IN ({resumable})
            AND (r.lease_owner = '' OR r.lease_expires_at < statement_timestamp())
        FOR UPDATE;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        UPDATE {run} AS r SET
            lease_owner = lease_token,
            lease_expires_at = statement_timestamp() + make_interval(secs => lease_seconds),
            claims_since_progress = r.claims_since_progress + 1,
            updated_at = statement_timestamp(),
            status = CASE WHEN r.status = '{queued}' THEN '{running}' ELSE r.status END
        WHERE r.id = run_pk
        RETURNING r.* INTO claimed;
        IF previous = '{queued}' THEN
            PERFORM count(*) FROM baton_audit_append(true, jsonb_build_array(jsonb_build_object(
                'actor', '{actor}', 'action', 'run.started', 'object_type', '{object_type}',
                'object_id', claimed.id::text, 'trace_id', claimed.trace_id, 'run_id', claimed.id::text,
                'release_id', claimed.release_id,
                'payload', jsonb_build_object('state', claimed.current_state),
                'payload_digest', encode(sha256(convert_to(
                    '{{"state":' || to_json(claimed.current_state)::text || '}}', 'UTF8')), 'hex')
            )));
        END IF;
        -- Read after the lease is taken: no step of another worker can commit from here on.
        IF claimed.status = '{running}' AND claimed.release_id <> '' AND claimed.hop_count > 0 THEN
            SELECT jsonb_agg(jsonb_build_array(s.state, s.output) ORDER BY s.sequence) INTO checkpoints
            FROM {checkpoint} AS s WHERE s.run_id = run_pk;
        END IF;
        RETURN NEXT;
    END
    $$
"""


def install_run_claim_function(cursor, apps) -> None:
    """Create baton_run_claim anew for the tables of `apps` (a migration's models): its result's
    shape may have changed, which CREATE OR REPLACE cannot do."""
    run, checkpoint = apps.get_model("runs", "Run"), apps.get_model("runs", "StepCheckpoint")
    drop_run_claim_function(cursor)
    cursor.execute(
        _CLAIM_FUNCTION.format(
            run=run._meta.db_table,
            checkpoint=checkpoint._meta.db_table,
            resumable=", ".join(f"'{status}'" for status in RESUMABLE_STATUSES),
            queued=Run.Status.QUEUED,
            running=Run.Status.RUNNING,
            actor=WORKER,
            object_type=run._meta.label_lower,
        )
    )


def drop_run_claim_function(cursor) -> None:
    cursor.execute("DROP FUNCTION IF EXISTS baton_run_claim(uuid, text, double precision)")
