"""The Django side of engine_bench.py: imported only once DATABASE_URL names the bench database.

Builds the no-op workflow, submits runs and executes them with `run_advance` exactly as the
Celery task does (one worker in this process, or two forked processes sharing one list of
runs), and times the audit append on its own.
"""

import cProfile
import io
import multiprocessing
import pstats
import time

import _setup  # noqa: F401  (Django set-up, on the DATABASE_URL set by engine_bench.py)
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.db import connection, connections, transaction

import runs.services.advance as advance_module
import runs.services.submission as submission_module
from controlplane.audit import Entry, ObjectRef, append_argument, record_many, verify_chain
from controlplane.canonical import digest
from controlplane.identity import PLATFORM, actor_for
from controlplane.models import AuditEvent
from policy.bundles import shipped_default_bundle
from policy.models import PolicyDecision
from registry.services.bundles import bundle_apply
from runs.models import Run, StepCheckpoint
from runs.services import WORKER_ACTOR, run_advance, task_submit

WORKFLOW = "bench_noop"
STEPS = 6
# Six human gates whose one condition is false on the run's facts (the task input sets
# never_true to false): each step completes without a model or tool call, but still goes
# through envelope validation, the step.transition decision, the checkpoint and the audit.
TASK_INPUT = {"never_true": False}


def _no_enqueue(*_args, **_kwargs) -> None:
    """The runs are executed here, by run_advance; no message goes to a broker."""


def prepare() -> None:
    """Migrate the empty bench database, add a platform user, apply and promote the workflow."""
    call_command("migrate", verbosity=0)
    submission_module.enqueue_on_commit = _no_enqueue
    advance_module.enqueue = _no_enqueue
    advance_module.enqueue_on_commit = _no_enqueue
    user = get_user_model().objects.create_user(username="bench-platform")
    user.groups.set(Group.objects.filter(name=PLATFORM))
    bundle = {
        "artifacts": {"policy_bundle": {"default": shipped_default_bundle().content}},
        "workflows": {
            WORKFLOW: {
                "workflow": WORKFLOW,
                "version": "1",
                "description": "Six no-op gates: the engine's own cost per step.",
                "steps": [{"name": f"gate_{n}", "human_if": ["never_true == true"]} for n in range(1, 7)],
                "limits": {"max_hops": 10, "deadline_s": 3600},
            }
        },
        "releases": [{"workflow": WORKFLOW, "policy_bundle": "default", "channels": ["staging"]}],
    }
    bundle_apply(bundle=bundle, author=user, actor=actor_for(user))


def submit(count: int, label: str) -> list[str]:
    user = get_user_model().objects.get(username="bench-platform")
    actor = actor_for(user)
    return [
        str(
            task_submit(
                requester=user,
                actor=actor,
                workflow=WORKFLOW,
                case_id=f"{label}-{n}",
                input=TASK_INPUT,
                channel="staging",
            ).run.pk
        )
        for n in range(count)
    ]


def execute_one_worker(run_ids: list[str]) -> tuple[list[float], float]:
    """(wall time of each run, wall time of all): run_advance one run after the other."""
    per_run = []
    started_all = time.perf_counter()
    for run_id in run_ids:
        started = time.perf_counter()
        run_advance(run_id=run_id, worker="bench")
        per_run.append(time.perf_counter() - started)
    return per_run, time.perf_counter() - started_all


def profile(run_ids: list[str], top: int = 25) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    for run_id in run_ids:
        run_advance(run_id=run_id, worker="bench")
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def unfinished(run_ids: list[str]) -> list[str]:
    done = set(
        map(str, Run.objects.filter(pk__in=run_ids, status=Run.Status.SUCCEEDED).values_list("pk", flat=True))
    )
    return [run_id for run_id in run_ids if run_id not in done]


def checkpoint_intervals(run_ids: list[str]) -> list[float]:
    """Seconds between consecutive checkpoints of a run (database clock), 5 per 6-step run."""
    rows = (
        StepCheckpoint.objects.filter(run_id__in=run_ids)
        .order_by("run_id", "sequence")
        .values_list("run_id", "finished_at")
    )
    intervals, previous = [], (None, None)
    for run_id, finished_at in rows:
        if run_id == previous[0]:
            intervals.append((finished_at - previous[1]).total_seconds())
        previous = (run_id, finished_at)
    return intervals


def worker_audit_events(run_ids: list[str]) -> tuple[int, int]:
    """(events the worker appended for these runs, appends that wrote them): the events one
    transaction appends together go in one INSERT and share the database time."""
    events = AuditEvent.objects.filter(run_id__in=run_ids, actor=WORKER_ACTOR)
    appends = events.values("run_id", "created_at").distinct().count()
    return events.count(), appends


def transition_decisions(run_ids: list[str]) -> tuple[int, int]:
    """(step.transition decisions logged for these runs, how many of them denied)."""
    decisions = PolicyDecision.objects.filter(run_id__in=run_ids, decision_point="step.transition")
    return decisions.count(), decisions.filter(allow=False).count()


def _worker(index, queue, ready, go, finished) -> None:
    connection.ensure_connection()  # a worker starts with its connection open, like a Celery child
    ready.put(index)
    go.wait()
    executed = 0
    while (run_id := queue.get()) is not None:
        run_advance(run_id=run_id, worker=f"bench-{index}")
        executed += 1
    finished.put((index, executed, time.monotonic()))
    connections.close_all()


def execute_workers(run_ids: list[str], workers: int = 2) -> tuple[float, dict[int, int]]:
    """Wall time for `workers` forked processes taking runs from one shared list."""
    context = multiprocessing.get_context("fork")
    queue, ready, finished, go = context.Queue(), context.Queue(), context.Queue(), context.Event()
    for run_id in run_ids:
        queue.put(run_id)
    for _ in range(workers):
        queue.put(None)
    connections.close_all()  # no connection crosses the fork
    processes = [
        context.Process(target=_worker, args=(n, queue, ready, go, finished)) for n in range(workers)
    ]
    for process in processes:
        process.start()
    for _ in processes:
        ready.get(timeout=60)
    started = time.monotonic()
    go.set()
    reports = [finished.get(timeout=600) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    if any(process.exitcode != 0 for process in processes):
        raise RuntimeError(f"a worker failed: exit codes {[p.exitcode for p in processes]}")
    wall = max(end for _, _, end in reports) - started
    return wall, {index: executed for index, executed, _ in reports}


def audit_appends(count: int, batch: int = 20) -> tuple[list[float], list[float], list[float]]:
    """Seconds per append, three ways: (1) what the audit adds to a step, whose events the
    step-commit function appends itself (runs/engine/commit_sql.py): building the entries'
    arrays in Python, plus the append function's time in the database, measured on `batch`
    appends made by one statement so that no round trip is counted; (2) record() inside an open
    transaction, taking the lock itself; (3) record() with its own commit, for reference."""
    payload = {
        "state": "gate_1",
        "sequence": 1,
        "output_digest": digest({"approval_required": False}),
        "next_state": "gate_2",
        "why": "default",
    }

    def entry(n: int) -> Entry:
        return Entry(
            WORKER_ACTOR,
            "bench.audit",
            ObjectRef("bench", str(n)),
            payload,
            trace_id="0" * 32,
            run_id=f"bench-{n}",
            release_id="rel_bench",
        )

    # `g > 0` (true) ties each call to its row: a call that depends on nothing is made once.
    repeated = "SELECT count(*) FROM generate_series(1, %s) g, LATERAL baton_audit_append(g > 0, %s::jsonb)"
    as_in_step, in_transaction, with_commit = [], [], []
    for first in range(0, count, batch):
        built = time.perf_counter()
        arguments = [append_argument([entry(n)]) for n in range(first, first + batch)]
        building = (time.perf_counter() - built) / batch
        with transaction.atomic(), connection.cursor() as cursor:
            appended = time.perf_counter()
            cursor.execute(repeated, [batch, arguments[0]])
            in_database = (time.perf_counter() - appended) / batch
        as_in_step.extend([building + in_database] * batch)
    for n in range(count):
        started = time.perf_counter()
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")  # BEGIN is sent now: a step's transaction is already open
            appended = time.perf_counter()
            record_many([entry(n)])
            in_transaction.append(time.perf_counter() - appended)
        with_commit.append(time.perf_counter() - started)
    return as_in_step, in_transaction, with_commit


def chain_ok() -> tuple[bool, int]:
    result = verify_chain()
    return result.ok, result.checked


def close() -> None:
    connections.close_all()
