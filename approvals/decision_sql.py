"""A reviewer's decision on PostgreSQL in few round trips: the run waits on it.

LOCKED_REQUEST reads the request under its row lock with its run, its requester's name and
whether this reviewer decided it before, and reserves the id its decision's log row will
take (a sequence's next value: a decision that is then refused or not recorded leaves a gap,
as a rolled-back insert would), so that the events citing the log row can be written with it.

APPROVE_AND_RESUME is the approval that closes its request and resumes the run, the most
frequent decision and the one a run waits on: the decision's log row, the reviewer's
decision, the request approved, the run queued again (only if it still waits: else nothing
is appended, and the caller rolls back) and the two events, `approval.decided` and
`run.approved`, in one statement. It writes what `runs.services.pending_action_settle` writes
for such an approval, one by one elsewhere (SQLite, and every other outcome).

The columns are read from the models as they are; the rows travel as JSON objects keyed by
column, read back with jsonb_populate_record.
"""

import functools
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection

from policy.models import PolicyDecision
from runs.engine.commit_sql import (
    inserted_columns,
    inserted_fields,
    instance_from_row,
    json_argument,
    server_binding_cursor,
)
from runs.models import PendingAction, Run

from .models import ApprovalDecision


def _selected(model, alias: str) -> str:
    return ", ".join(f"{alias}.{field.column}" for field in model._meta.concrete_fields)


@functools.cache
def _locked_request_statement() -> str:
    user = get_user_model()
    return f"""
        SELECT {_selected(PendingAction, "p")}, {_selected(Run, "r")},
            u.{user._meta.get_field(user.USERNAME_FIELD).column},
            EXISTS (
                SELECT FROM {ApprovalDecision._meta.db_table} AS d
                WHERE d.pending_action_id = p.id AND d.reviewer_id = %(reviewer)s
            ),
            nextval(pg_get_serial_sequence('{PolicyDecision._meta.db_table}', 'id'))
        FROM {PendingAction._meta.db_table} AS p
        JOIN {Run._meta.db_table} AS r ON r.id = p.run_id
        LEFT JOIN {user._meta.db_table} AS u ON u.{user._meta.pk.column} = p.requested_by_id
        WHERE p.id = %(request)s
        FOR UPDATE OF p
    """  # noqa: S608


def locked_request(pending_action_id: int, reviewer_id: int) -> PendingAction | None:
    """The request with its run and requester (their name only) loaded, `decided_before` and
    `log_id` (the id reserved for its decision's log row) set; None if there is no such request."""
    with server_binding_cursor() as cursor:
        cursor.execute(_locked_request_statement(), {"request": pending_action_id, "reviewer": reviewer_id})
        row = cursor.fetchone()
    if row is None:
        return None
    request_columns, run_columns = len(PendingAction._meta.concrete_fields), len(Run._meta.concrete_fields)
    pending = instance_from_row(PendingAction, row[:request_columns])
    pending.run = instance_from_row(Run, row[request_columns : request_columns + run_columns])
    username, pending.decided_before, pending.log_id = row[request_columns + run_columns :]
    if pending.requested_by_id is not None:
        user = get_user_model()
        pending.requested_by = user.from_db(
            connection.alias,
            [user._meta.pk.attname, user.USERNAME_FIELD],
            [pending.requested_by_id, username],
        )
    return pending


APPROVE_AND_RESUME = f"""
    WITH logged AS (
        INSERT INTO {PolicyDecision._meta.db_table} (id, {inserted_columns(PolicyDecision)})
        SELECT %(log_id)s, {inserted_columns(PolicyDecision)}
        FROM jsonb_populate_record(NULL::{PolicyDecision._meta.db_table}, %(log_row)s::jsonb)
    ), decided AS (
        INSERT INTO {ApprovalDecision._meta.db_table} ({inserted_columns(ApprovalDecision)})
        SELECT {inserted_columns(ApprovalDecision)}
        FROM jsonb_populate_record(NULL::{ApprovalDecision._meta.db_table}, %(decision_row)s::jsonb)
        RETURNING id, created_at
    ), request AS (
        UPDATE {PendingAction._meta.db_table} SET
            status = '{PendingAction.Status.APPROVED}', approvals = %(approvals)s,
            decided_at = statement_timestamp()
        WHERE id = %(request)s
        RETURNING decided_at
    ), resumed AS (
        UPDATE {Run._meta.db_table} SET
            status = '{Run.Status.QUEUED}', lease_owner = '',
            lease_expires_at = statement_timestamp() + make_interval(secs => %(lease_seconds)s),
            updated_at = statement_timestamp()
        WHERE id = %(run)s AND status = '{Run.Status.WAITING_APPROVAL}'
        RETURNING lease_expires_at, updated_at
    ), appended AS (
        SELECT count(*) AS events FROM baton_audit_append(true, %(entries)s::jsonb)
        WHERE EXISTS (SELECT FROM resumed)
    )
    SELECT decided.id, decided.created_at, request.decided_at,
        resumed.lease_expires_at, resumed.updated_at, appended.events
    FROM decided CROSS JOIN request CROSS JOIN appended LEFT JOIN resumed ON true
"""  # noqa: S608


@dataclass(frozen=True)
class Resumed:
    decision_id: int
    decision_created_at: datetime
    decided_at: datetime
    lease_expires_at: datetime | None  # None: the run no longer waited, nothing was appended
    updated_at: datetime | None


def approve_and_resume(
    *, pending: PendingAction, log_row: dict, decision: ApprovalDecision, entries: str
) -> Resumed:
    """APPROVE_AND_RESUME for a request read by `locked_request`, in the same transaction;
    `decision`: the reviewer's, not yet saved; `entries`: the events' JSON
    (`audit.append_argument`)."""
    decision_row = {
        field.column: getattr(decision, field.attname) for field in inserted_fields(ApprovalDecision)
    }
    arguments = {
        "log_id": pending.log_id,
        "log_row": json_argument(log_row),
        "decision_row": json_argument(decision_row),
        "approvals": pending.approvals + 1,
        "request": pending.pk,
        "run": pending.run_id,
        "lease_seconds": float(settings.RUN_LEASE_SECONDS),
        "entries": entries,
    }
    with server_binding_cursor() as cursor:
        cursor.execute(APPROVE_AND_RESUME, arguments)
        decision_id, created_at, decided_at, lease_expires_at, updated_at, _ = cursor.fetchone()
    return Resumed(decision_id, created_at, decided_at, lease_expires_at, updated_at)
