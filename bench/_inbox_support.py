"""The Django side of inbox_bench.py, imported once DATABASE_URL names the bench database.

Also the Celery app of the bench's worker (`celery -A _inbox_support worker`): Baton's app with
a result backend and one trivial task, so that a raw round trip can be measured beside the
run engine's tasks on the same worker and broker.
"""

import time
from datetime import timedelta
from urllib.parse import urlencode

import _setup  # noqa: F401  (Django set-up, on the DATABASE_URL set by inbox_bench.py)
import psycopg
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import include, path
from django.utils import timezone
from django.views.decorators.http import require_POST

from controlplane.audit import Entry, ObjectRef, append_argument
from controlplane.celery import app
from controlplane.identity import PLATFORM, REVIEWER, Actor, actor_for, api_key_issue
from controlplane.models import AuditEvent
from policy.models import PolicyDecision
from policy.services import policy_evaluate
from registry.services.bundles import bundle_apply, load_bundle_file
from runs.engine.released import released_workflow
from runs.models import Effect, PendingAction, Run
from runs.services import task_submit
from sandbox.models import SupportCase

APPROVAL = urlencode({"decision": "approve", "reason": "bench"})
URL_ENCODED = "application/x-www-form-urlencoded"
SUPPORT_BUNDLE = settings.BASE_DIR / "demo" / "bundles" / "support_case_resolution.yaml"
SMALL_REFUND = {"text": "Please refund order #123, I want my money back: a refund of $120"}
RISKS = [
    ({"side_effect": "irreversible", "amount": 120, "sensitivity": "internal"}, PendingAction.Risk.HIGH),
    ({"side_effect": "write", "amount": 40, "sensitivity": "internal"}, PendingAction.Risk.MEDIUM),
    ({"conditions": ["confidence < 0.85"]}, PendingAction.Risk.MEDIUM),
    ({}, PendingAction.Risk.LOW),
]

app.conf.result_backend = settings.CELERY_BROKER_URL


@app.task(name="bench.echo", ignore_result=False)
def echo(value: int) -> int:
    return value


@login_required
def trivial(request: HttpRequest) -> HttpResponse:
    """The baseline: a signed-in request through the same middleware, doing nothing."""
    return HttpResponse("ok")


# The parts of pause -> resume, each at its least, for a floor measured beside the real thing:
# the decision's request (a signed-in POST; the request's row locked; approval.decide evaluated;
# what it writes as one statement; its commit; the run handed to Celery) and the worker's step
# (the claim as one statement; the agent read; tool.call evaluated; the decision log and the
# write-ahead intent as one statement; the system of record's write as one statement; the step
# committed as one append to the ledger). Same middleware, engine, bundle, broker and worker; the
# policy inputs are the ones the real resumes logged. No checks, no ORM, nothing else.
FLOOR_WRITES = "bench_floor_writes"
FLOOR_WRITE = f"INSERT INTO {FLOOR_WRITES} (run_id, allow) VALUES (%s, %s)"
_floor_inputs: dict[str, tuple] = {}


def floor_inputs(run_id: str) -> tuple:
    """(approval.decide input, tool.call input, the bundle) from a run that resumed for real."""
    if not _floor_inputs:
        run = Run.objects.get(pk=run_id)
        logged = PolicyDecision.objects.filter(run_id=run_id).order_by("-pk")
        decide = logged.filter(decision_point="approval.decide").values_list("input", flat=True)[0]
        call = logged.filter(decision_point="tool.call").values_list("input", flat=True)[0]
        call["args"] = Effect.objects.get(run_id=run_id, state="commit").args  # redacted in the log
        _floor_inputs["inputs"] = (decide, call, released_workflow(run.release_id).policy)
    return _floor_inputs["inputs"]


@login_required
@require_POST
def floor_decide(request: HttpRequest, pk: int, resumed: str) -> HttpResponse:
    decide, _, bundle = floor_inputs(resumed)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT run_id FROM runs_pendingaction WHERE id = %s FOR UPDATE", [pk])
        (run_id,) = cursor.fetchone()
        decision = policy_evaluate("approval.decide", decide, bundle=bundle)
        cursor.execute(FLOOR_WRITE, [run_id, decision.allow])
        transaction.on_commit(lambda: floor_step.delay(str(run_id), resumed))
    return HttpResponseRedirect("/approvals/")


@app.task(name="bench.floor_step")
def floor_step(run_id: str, resumed: str) -> None:
    _, call, bundle = floor_inputs(resumed)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE runs_run SET updated_at = now() WHERE id = %s RETURNING case_id", [run_id])
        (case_id,) = cursor.fetchone()
        cursor.execute("SELECT status, allowed_tools FROM registry_agent WHERE slug = %s", ["case_manager"])
        cursor.fetchone()
        decision = policy_evaluate("tool.call", call, bundle=bundle)
        cursor.execute(FLOOR_WRITE, [run_id, decision.allow])
        cursor.execute("UPDATE sandbox_supportcase SET status = 'resolved' WHERE case_id = %s", [case_id])
        step = Entry(
            "system:worker",
            "run.step.completed",
            ObjectRef("runs.run", run_id),
            {"state": "commit", "sequence": 5},
            run_id=run_id,
        )
        cursor.execute("SELECT count(*) FROM baton_audit_append(true, %s::jsonb)", [append_argument([step])])


urlpatterns = [
    path("bench/trivial/", trivial),
    path("bench/floor/<int:pk>/<uuid:resumed>/", floor_decide),
    path("", include("controlplane.urls")),
]


def prepare() -> None:
    """Migrate the empty bench database; reviewer, requester and platform users; the demo workflow."""
    call_command("migrate", verbosity=0)
    settings.ROOT_URLCONF = __name__
    users = get_user_model().objects
    platform = users.create_user(username="bench-platform")
    platform.groups.set(Group.objects.filter(name=PLATFORM))
    reviewer = users.create_user(username="bench-reviewer")
    reviewer.groups.set(Group.objects.filter(name=REVIEWER))
    users.create_user(username="bench-requester")
    bundle_apply(bundle=load_bundle_file(SUPPORT_BUNDLE), author=platform, actor=actor_for(platform))


def reviewer_clients() -> tuple[Client, Client]:
    """(a browser session, an API client with a key) of the reviewer."""
    reviewer = get_user_model().objects.get(username="bench-reviewer")
    browser = Client(HTTP_HOST="localhost")
    browser.force_login(reviewer)
    key = api_key_issue(
        user=reviewer, name="bench", scopes=["approvals:read"], issued_by=Actor("bench", kind="system")
    ).secret
    return browser, Client(HTTP_HOST="localhost", HTTP_AUTHORIZATION=f"Bearer {key}")


def bulk_pending(count: int, offset: int) -> None:
    """`count` parked runs with their pending requests, written in bulk (no engine, no signals)."""
    requester = get_user_model().objects.get(username="bench-requester")
    now = timezone.now()
    with transaction.atomic():
        runs = Run.objects.bulk_create(
            [
                Run(
                    workflow="support_case_resolution" if n % 3 else "builtin.intake",
                    workflow_version="1",
                    case_id=f"BULK-{offset + n}",
                    input={"text": f"refund request {offset + n}"},
                    status=Run.Status.WAITING_APPROVAL,
                    current_state="commit",
                    trace_id=f"{offset + n:032x}",
                    requested_by=requester,
                    request_digest="0" * 64,
                )
                for n in range(count)
            ],
            batch_size=1000,
        )
        PendingAction.objects.bulk_create(
            [
                PendingAction(
                    run=run,
                    state="commit",
                    reasons=["crm.update_case is irreversible"],
                    proposed_action={
                        "tool": "crm.update_case",
                        "args": {"case_id": run.case_id, "resolution": "ok"},
                    },
                    action_hash=f"{n:064x}",
                    risk=RISKS[n % len(RISKS)][0],
                    risk_rank=RISKS[n % len(RISKS)][1],
                    approvers=["reviewer"],
                    approver_group="reviewer",
                    quorum=1,
                    due_at=now + timedelta(hours=1 + (offset + n) % 72),
                    workflow=run.workflow,
                    requested_by=requester,
                    sensitivity_rank=PendingAction.SENSITIVITY_RANKS["internal"],
                )
                for n, run in enumerate(runs)
            ],
            batch_size=1000,
        )
    with connection.cursor() as cursor:  # what autovacuum does to a table that grew this much
        cursor.execute("VACUUM ANALYZE runs_run, runs_pendingaction")


def queries_of(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return len(queries)


def timed_get(client: Client, url: str) -> float:
    started = time.perf_counter()
    response = client.get(url)
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, (url, response.status_code)
    return elapsed


def submit_parked(count: int) -> list[str]:
    """Open `count` cases in the sandbox system of record and submit them; the worker runs each
    to its approval point."""
    SupportCase.objects.bulk_create(
        [
            SupportCase(case_id=f"RESUME-{n}", customer="Bench", subject="Refund order #123")
            for n in range(count)
        ]
    )
    requester = get_user_model().objects.get(username="bench-requester")
    return [
        str(
            task_submit(
                requester=requester,
                actor=actor_for(requester),
                workflow="support_case_resolution",
                case_id=f"RESUME-{n}",
                input=SMALL_REFUND,
                channel="staging",
            ).run.pk
        )
        for n in range(count)
    ]


def wait_parked(run_ids: list[str], timeout: float) -> dict[str, int]:
    """run id → its pending request, once the worker has parked every run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = dict(
            PendingAction.objects.filter(run_id__in=run_ids, status=PendingAction.Status.PENDING).values_list(
                "run_id", "pk"
            )
        )
        if len(found) == len(run_ids):
            return {str(run_id): pk for run_id, pk in found.items()}
        time.sleep(0.2)
    raise RuntimeError(f"only {len(found)} of {len(run_ids)} runs parked within {timeout:.0f} s")


class StepCommits:
    """Tells when the worker commits a run's step at `state`, without asking the database in a
    loop (a poll every half millisecond took a core of this machine from the worker it timed).

    A trigger in the bench database sends a notification from the ledger's INSERT of the step's
    event; PostgreSQL delivers it when that transaction commits, to a connection that waits
    for it in select(): the time it arrives is the time the event was committed, plus a local
    socket's latency."""

    CHANNEL = "bench_step_committed"

    def __init__(self, url: str, state: str) -> None:
        ledger = AuditEvent._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                f"""
                CREATE FUNCTION bench_step_committed() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN PERFORM pg_notify('{self.CHANNEL}', NEW.run_id); RETURN NULL; END $$;
                CREATE TRIGGER bench_step_committed AFTER INSERT ON {ledger} FOR EACH ROW
                WHEN (NEW.action = 'run.step.completed' AND NEW.payload->>'state' = '{state}')
                EXECUTE FUNCTION bench_step_committed();
                """
            )
        self.listener = psycopg.connect(url, autocommit=True)
        self.listener.execute(f"LISTEN {self.CHANNEL}")

    def wait_for(self, run_id: str, timeout: float) -> bool:
        return any(notice.payload == run_id for notice in self.listener.notifies(timeout=timeout))

    def close(self) -> None:
        self.listener.close()


def pause_to_resume(browser: Client, commits: StepCommits, run_id: str, pending_id: int, timeout: float = 30):
    """Seconds from the reviewer's approval POST to the worker's commit of the next step's audit
    event ("resume"), and where they went: the POST itself ("post"), then by the ledger's clock
    (each event's time is taken as it is appended, just before its commit) from the decision's
    `run.approved` to the worker's `run.started` ("to_started") and from there to the step's
    event ("step")."""
    started = time.perf_counter()
    # As the inbox's form (and htmx) sends it: url-encoded, not the test client's multipart.
    response = browser.post(f"/approvals/{pending_id}/decision/", APPROVAL, content_type=URL_ENCODED)
    answered = time.perf_counter() - started
    assert response.status_code == 302, response.status_code
    if not commits.wait_for(run_id, timeout):
        run = Run.objects.get(pk=run_id)
        events = AuditEvent.objects.filter(run_id=run_id).order_by("seq")
        actions = list(events.values_list("action", "payload"))
        raise RuntimeError(
            f"run {run_id} did not carry out its approved step in {timeout:.0f} s: "
            f"{run.status} {run.error!r}; events {actions}"
        )
    resumed = time.perf_counter() - started
    appended = dict(
        AuditEvent.objects.filter(run_id=run_id, action__in=["run.approved", "run.started"]).values_list(
            "action", "created_at"
        )
    )
    step_at = (
        AuditEvent.objects.filter(run_id=run_id, action="run.step.completed", payload__state="commit")
        .values_list("created_at", flat=True)
        .get()
    )
    return {
        "resume": resumed,
        "post": answered,
        "to_started": (appended["run.started"] - appended["run.approved"]).total_seconds(),
        "step": (step_at - appended["run.started"]).total_seconds(),
    }


def floor_resume(
    browser: Client, commits: StepCommits, run_id: str, pending_id: int, resumed: str
) -> tuple[float, float]:
    """Seconds from the floor's POST to the commit of its step's event, and of its POST."""
    started = time.perf_counter()
    response = browser.post(f"/bench/floor/{pending_id}/{resumed}/")
    answered = time.perf_counter() - started
    assert response.status_code == 302, response.status_code
    if not commits.wait_for(run_id, 30):
        raise RuntimeError(f"the floor's step for run {run_id} did not commit in 30 s")
    return time.perf_counter() - started, answered


def create_floor_table() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {FLOOR_WRITES} (id bigserial PRIMARY KEY, run_id uuid, allow boolean)")


def celery_round_trip() -> float:
    started = time.perf_counter()
    assert echo.delay(7).get(timeout=30) == 7
    return time.perf_counter() - started


def run_statuses(run_ids: list[str]) -> dict[str, int]:
    statuses: dict[str, int] = {}
    for status in Run.objects.filter(pk__in=run_ids).values_list("status", flat=True):
        statuses[status] = statuses.get(status, 0) + 1
    return statuses
