"""The `map` step: fan out over a list, one checkpointed branch per element, then fan in once.

The run's worker evaluates `over`, writes one `MapBranch` row per element and gives the run
back; branches run as their own tasks, at most `concurrency` holding a slot at once, each
with its own lease, attempts, policy decisions and (for tools) idempotency key. Every branch
commit locks the run row, so the branch that settles the last one sees it and hands the run
back to the queue; the run's worker then commits the map step's checkpoint with the ordered
outputs (or fails the run) exactly once, under its lease. A lost message is a lease that
expires: the sweeper re-enqueues the branch or the run.
"""

import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Now

from controlplane.audit import record
from controlplane.canonical import digest
from controlplane.dbtime import database_now, database_now_plus
from controlplane.telemetry import run_span, span
from policy.services import decision_input, policy_decide
from registry.expressions import EvaluationError, ExpressionError, parse
from registry.workflow_definitions import MAX_MAP_ITEMS

from ..models import MapBranch, Run
from .common import WORKER, add_spent, audit_ids, lease_lasts, locked_run, record_committed_effect
from .envelope import build_envelope, by_reference, envelope_problems, merged_facts, resolve
from .released import ReleasedWorkflow, released_workflow
from .steps import StepOutcome, execute_agent_step, execute_tool_step, policy_run_document

logger = logging.getLogger(__name__)
DEFAULT_CONCURRENCY = 1
_COMPLETED_DETAILS = ("kind", "agent", "tool", "config", "tokens", "cost_usd", "idempotency_key", "replayed")


def enqueue_branch(branch_id: Any, countdown: float = 0) -> None:
    from ..services.queue import enqueue_branch as send  # the services package imports this engine

    send(branch_id, countdown=countdown)


def _on_commit_enqueue_branches(branch_ids: list[int]) -> None:
    for branch_id in branch_ids:
        transaction.on_commit(lambda branch_id=branch_id: enqueue_branch(branch_id))


# The run's side: fan out, wait, fan in -----------------------------------------------------------


def execute_map_step(run: Run, lease_token: str, step: dict, facts: dict, sequence: int) -> StepOutcome:
    """'wait' once branches are out (the run was given back), 'done' with the ordered outputs
    when every branch succeeded, 'fail' when one failed or the list cannot be made."""
    spec = step["map"]
    with transaction.atomic():
        locked = locked_run(run, lease_token)
        if locked is None:
            return StepOutcome("wait")
        branches = list(MapBranch.objects.filter(run=locked, sequence=sequence).order_by("index"))
        if not branches:
            items, error = _items(spec, facts)
            if error:
                return StepOutcome("fail", error=f"map {step['name']}: {error}", retryable=False)
            if not items:
                return StepOutcome("done", output={step["name"]: []}, details={"kind": "map", "branches": 0})
            _fan_out(locked, step, items, sequence)
            return StepOutcome("wait")
        failed = [branch for branch in branches if branch.status == MapBranch.Status.FAILED]
        unsettled = [branch for branch in branches if branch.status not in MapBranch.SETTLED_STATUSES]
        if not unsettled and failed:
            first = failed[0]
            error = f"map {step['name']}: branch {first.index} failed: {first.error}"
            return StepOutcome("fail", error=error, retryable=False)
        if not unsettled:
            run.spent = locked.spent  # the branches' spending, added as each of them committed
            return StepOutcome(
                "done",
                output={step["name"]: [resolve(branch.output) for branch in branches]},
                details={
                    "kind": "map",
                    "branches": len(branches),
                    "concurrency": spec.get("concurrency", DEFAULT_CONCURRENCY),
                },
            )
        # Delivered again while branches are out (or re-injected by an operator): fill free
        # slots and give the run back; the last branch to settle brings it here again.
        if not failed:
            _on_commit_enqueue_branches(_fill_slots(locked, sequence, spec))
        _give_back(locked)
        return StepOutcome("wait")


def _items(spec: dict, facts: dict) -> tuple[list, str]:
    try:
        items = parse(spec["over"]).evaluate(facts)
    except (EvaluationError, ExpressionError) as error:
        return [], f"cannot evaluate {spec['over']!r}: {error}"
    if not isinstance(items, list):
        return [], f"{spec['over']!r} gave a {type(items).__name__}, not a list"
    if len(items) > MAX_MAP_ITEMS:
        return [], f"{spec['over']!r} gave {len(items)} elements, more than {MAX_MAP_ITEMS}"
    return items, ""


def _fan_out(locked: Run, step: dict, items: list, sequence: int) -> None:
    concurrency = step["map"].get("concurrency", DEFAULT_CONCURRENCY)
    MapBranch.objects.bulk_create(
        MapBranch(run=locked, sequence=sequence, state=step["name"], index=index, item=item)
        for index, item in enumerate(items)
    )
    queued = _fill_slots(locked, sequence, step["map"])
    record(
        WORKER,
        "run.map.started",
        locked,
        {"state": step["name"], "sequence": sequence, "branches": len(items), "concurrency": concurrency},
        **audit_ids(locked),
    )
    _give_back(locked)
    _on_commit_enqueue_branches(queued)


def _give_back(locked: Run) -> None:
    """No lease while the branches work: the sweeper looks after them, not after the run."""
    locked.lease_owner, locked.lease_expires_at = "", None
    locked.claims_since_progress, locked.updated_at = 0, Now()
    locked.save(update_fields=["lease_owner", "lease_expires_at", "claims_since_progress", "updated_at"])


def _fill_slots(run: Run, sequence: int, spec: dict) -> list[int]:
    """Give free slots to the next pending branches, in list order; their ids, to enqueue."""
    siblings = MapBranch.objects.filter(run=run, sequence=sequence)
    free = (
        spec.get("concurrency", DEFAULT_CONCURRENCY)
        - siblings.filter(status__in=MapBranch.ACTIVE_STATUSES).count()
    )
    if free <= 0:
        return []
    pending = siblings.filter(status=MapBranch.Status.PENDING).order_by("index")
    ids = list(pending.values_list("pk", flat=True)[:free])
    if ids:
        MapBranch.objects.filter(pk__in=ids).update(
            status=MapBranch.Status.QUEUED,
            lease_expires_at=database_now_plus(settings.RUN_LEASE_SECONDS),
            updated_at=Now(),
        )
    return ids


# The branch's side: run one element, commit its outcome, settle the map ---------------------------


def execute_branch(branch: MapBranch, lease_token: str, enqueue: Callable) -> None:
    """Run one branch under its lease and commit what happened, in one transaction."""
    with run_span(branch.run), span("step", inherited={"step": f"{branch.state}[{branch.index}]"}):
        _execute_branch(branch, lease_token, enqueue)


def _execute_branch(branch: MapBranch, lease_token: str, enqueue: Callable) -> None:
    run = branch.run
    if run.status != Run.Status.RUNNING or run.current_state != branch.state:
        _settle(branch, lease_token, StepOutcome("cancelled", error=f"the run is {run.status}"), enqueue)
        return
    released = released_workflow(run.release_id)
    step = released.step(branch.state)
    spec = step["map"]
    carried = dict(run.checkpoints.order_by("sequence").values_list("state", "output"))
    results = {state: resolve(output) for state, output in carried.items()}
    facts = {**merged_facts(run, results), spec.get("as", "item"): branch.item}
    task = _branch_task(step, branch.index)
    envelope = build_envelope(
        run, results, carried, state=branch.state, allowed=[branch.state], step=task, source_agent=None
    )
    envelope["branch"] = {"index": branch.index, "item": branch.item}
    problems = envelope_problems(envelope)
    if problems:
        outcome = StepOutcome("fail", error=f"invalid envelope: {problems[0]}", retryable=False)
    elif not lease_lasts(MapBranch, branch.pk, lease_token, released.step_time_limit(task)):
        return  # the lease was taken away since the claim
    else:
        outcome = _run_branch(run, released, step, task, branch, results, facts)
    _settle(branch, lease_token, outcome, enqueue)


def _branch_task(step: dict, index: int) -> dict:
    """The map's agent or tool as a step of its own, named `state[index]` (its keys differ by branch)."""
    task = {k: v for k, v in step["map"].items() if k not in ("over", "as", "concurrency")}
    retry = {"retry": step["retry"]} if "retry" in step else {}
    return {**task, "name": f"{step['name']}[{index}]", **retry}


def _run_branch(
    run: Run,
    released: ReleasedWorkflow,
    step: dict,
    task: dict,
    branch: MapBranch,
    results: dict,
    facts: dict,
) -> StepOutcome:
    now = database_now().timestamp()
    limits = _limits_decision(run, released, step["name"], now)
    if not limits.allow:
        return StepOutcome(
            "fail",
            error=f"branch {branch.index} denied: {'; '.join(limits.reasons)}",
            retryable=False,
            details={"limits_decision": limits.decision_id},
        )
    if "tool" in task:
        outcome = execute_tool_step(run, released, task, results, now, facts=facts)
    else:
        outcome = execute_agent_step(run, released, task, results, facts=facts, attempts=branch.attempts)
    if outcome.kind == "park":  # a branch has nobody to wait for: put the gate before the map step
        reasons = "; ".join(outcome.pending["reasons"]) if outcome.pending else ""
        error = f"branch {branch.index} needs an approval: {reasons}"
        return StepOutcome("fail", error=error, retryable=False)
    outcome.details["limits_decision"] = limits.decision_id
    return outcome


def _limits_decision(run: Run, released: ReleasedWorkflow, state: str, now: float):
    """Budget, hop limit and deadline, checked before each branch as before each step: entering
    the map's own state again is not a hop."""
    document = decision_input(
        "step.transition",
        run=policy_run_document(run, released, now),
        **{"from": state},
        to=state,
        allowed_next=[state],
    )
    return policy_decide(
        "step.transition",
        document,
        bundle=released.policy,
        actor=WORKER,
        trace_id=run.trace_id,
        run_id=run.pk,
    )


def _settle(branch: MapBranch, lease_token: str, outcome: StepOutcome, enqueue: Callable) -> None:
    step = released_workflow(branch.run.release_id).step(branch.state)
    max_attempts = step.get("retry", {}).get("max_attempts", settings.RUN_STEP_MAX_ATTEMPTS)
    base = step.get("retry", {}).get("backoff_s", settings.RUN_RETRY_BACKOFF_SECONDS)
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=branch.run_id)  # serialises the map's branches
        locked = MapBranch.objects.select_for_update().get(pk=branch.pk)
        if outcome.kind == "done":
            # Even with the lease lost, the ledger says what the tool did: the saga only undoes
            # committed effects.
            record_committed_effect(outcome.details, outcome.output)
        if locked.lease_owner != lease_token:
            return  # the lease expired meanwhile: another worker owns the branch now
        locked.lease_owner, locked.updated_at, locked.claims_since_progress = "", Now(), 0
        payload = {"state": locked.state, "index": locked.index, "sequence": locked.sequence}
        if outcome.kind == "retry" and outcome.retryable and locked.attempts + 1 < max_attempts:
            locked.status, locked.attempts = MapBranch.Status.QUEUED, locked.attempts + 1
            delay = base * 2 ** (locked.attempts - 1)
            locked.lease_expires_at = database_now_plus(delay + settings.RUN_LEASE_SECONDS)
            locked.error = outcome.error
            locked.save()
            record(
                WORKER,
                "run.map.branch.retrying",
                run,
                {**payload, "attempt": locked.attempts, "delay_s": delay, "error": outcome.error},
                **audit_ids(run),
            )
            transaction.on_commit(lambda: enqueue_branch(locked.pk, countdown=delay))
            return
        locked.lease_expires_at, locked.finished_at = None, Now()
        if outcome.kind == "done":
            _succeed(run, locked, outcome, payload)
        else:
            locked.status, locked.error = (
                MapBranch.Status.CANCELLED if outcome.kind == "cancelled" else MapBranch.Status.FAILED,
                outcome.error,
            )
            locked.attempts += 1 if outcome.kind == "retry" else 0
            locked.details = {**locked.details, **outcome.details}
            locked.save()
            if outcome.kind != "cancelled":
                record(
                    WORKER,
                    "run.map.branch.failed",
                    run,
                    {**payload, "attempts": locked.attempts, "error": outcome.error},
                    **audit_ids(run),
                )
        _after_settle(run, locked, step, enqueue)


def _succeed(run: Run, locked: MapBranch, outcome: StepOutcome, payload: dict) -> None:
    locked.status = MapBranch.Status.SUCCEEDED
    locked.output, locked.details, locked.error = by_reference(outcome.output), outcome.details, ""
    locked.save()
    if outcome.spent:
        run.spent = add_spent(run.spent, outcome.spent)
        run.save(update_fields=["spent"])
    record(
        WORKER,
        "run.map.branch.completed",
        run,
        {
            **payload,
            "output_digest": digest(outcome.output),
            **{k: v for k, v in outcome.details.items() if k in _COMPLETED_DETAILS},
        },
        **audit_ids(run),
    )


def _after_settle(run: Run, branch: MapBranch, step: dict, enqueue: Callable) -> None:
    """Under the run's lock: a failure cancels the branches that have not started; otherwise the
    next pending ones take the free slots; the branch that settles the last one fans in."""
    if run.status != Run.Status.RUNNING or run.current_state != branch.state:
        return  # cancelled or moved on: nothing more starts, nothing fans in
    siblings = MapBranch.objects.filter(run=run, sequence=branch.sequence)
    if siblings.filter(status=MapBranch.Status.FAILED).exists():
        siblings.filter(status=MapBranch.Status.PENDING).update(
            status=MapBranch.Status.CANCELLED, finished_at=Now(), updated_at=Now()
        )
    else:
        _on_commit_enqueue_branches(_fill_slots(run, branch.sequence, step["map"]))
    if siblings.exclude(status__in=MapBranch.SETTLED_STATUSES).exists():
        return
    # The fan-in: the run goes back to the queue. Should the message be lost, its lease expires
    # and the sweeper sends it again; whichever worker claims it commits the map step once.
    Run.objects.filter(pk=run.pk).update(
        lease_owner="", lease_expires_at=database_now_plus(settings.RUN_LEASE_SECONDS), updated_at=Now()
    )
    transaction.on_commit(lambda: enqueue(run.pk))


# Claims, poison branches and the sweeper -------------------------------------------------------------


def claim_branch(branch_id: Any, lease_token: str) -> MapBranch | None:
    """Take the branch's lease with a conditional UPDATE; None when it is settled or leased."""
    claimed = (
        MapBranch.objects.filter(pk=branch_id, status__in=MapBranch.ACTIVE_STATUSES)
        .filter(Q(lease_owner="") | Q(lease_expires_at__lt=Now()))
        .update(
            status=MapBranch.Status.RUNNING,
            lease_owner=lease_token,
            lease_expires_at=database_now_plus(settings.RUN_LEASE_SECONDS),
            claims_since_progress=F("claims_since_progress") + 1,
            started_at=Now(),
            updated_at=Now(),
        )
    )
    if claimed != 1:
        return None
    return MapBranch.objects.select_related("run").get(pk=branch_id)


def fail_poison_branch(branch: MapBranch, lease_token: str, enqueue: Callable) -> bool:
    """A branch that killed its worker RUN_MAX_CLAIMS times fails instead of coming back forever."""
    if branch.claims_since_progress <= settings.RUN_MAX_CLAIMS:
        return False
    crashes = branch.claims_since_progress - 1
    error = f"branch {branch.index} stopped its worker {crashes} times without finishing"
    _settle(branch, lease_token, StepOutcome("fail", error=error, retryable=False), enqueue)
    return True


def fail_crashed_branch(branch: MapBranch, lease_token: str, error: Exception, enqueue: Callable) -> None:
    reason = (str(error).splitlines() or [""])[0]
    outcome = StepOutcome("fail", error=f"branch {branch.index} raised {type(error).__name__}: {reason}")
    _settle(branch, lease_token, outcome, enqueue)


def sweep_expired_branches(actor: str, limit: int) -> int:
    """Re-enqueue branches holding a slot whose lease expired (dead worker or lost message)."""
    expired = list(
        MapBranch.objects.filter(
            status__in=MapBranch.ACTIVE_STATUSES, lease_expires_at__lt=Now(), run__status=Run.Status.RUNNING
        )
        .order_by("lease_expires_at")
        .values_list("pk", flat=True)[:limit]
    )
    requeued = 0
    for branch_id in expired:
        with transaction.atomic():
            branch = (
                MapBranch.objects.select_for_update()
                .select_related("run")
                .filter(pk=branch_id, status__in=MapBranch.ACTIVE_STATUSES, lease_expires_at__lt=Now())
                .first()
            )
            if branch is None:
                continue
            previous_owner = branch.lease_owner
            branch.lease_owner = ""
            branch.lease_expires_at = database_now_plus(settings.RUN_LEASE_SECONDS)
            branch.save(update_fields=["lease_owner", "lease_expires_at"])
            record(
                actor,
                "run.map.branch.lease_expired",
                branch.run,
                {"state": branch.state, "index": branch.index, "previous_owner": previous_owner or None},
                **audit_ids(branch.run),
            )
            transaction.on_commit(lambda branch_id=branch_id: enqueue_branch(branch_id))
            requeued += 1
    return requeued
