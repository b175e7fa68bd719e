import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from approvals.services import approval_decide
from runs.models import Run
from tests.runs.test_failure_modes import BUILTIN_BINDINGS, PRICEY, two_builtin_steps
from tests.support.workflows import advance


@pytest.fixture
def finished_demo(settings) -> list[Run]:
    """The demo's runs, driven to their ends in process: every pending request approved by a
    reviewer, so runs go through gates, policy approvals, tools and models."""
    settings.RUN_RETRY_BACKOFF_SECONDS = 0
    call_command("load_demo", verbosity=0)
    reviewer = get_user_model().objects.get(username="reviewer")
    for _ in range(4):
        for run in Run.objects.filter(status__in=[Run.Status.QUEUED, Run.Status.RUNNING]):
            advance(run)
        for run in Run.objects.filter(status=Run.Status.WAITING_APPROVAL):
            pending = run.pending_actions.get(status="pending")
            approval_decide(
                pending_action_id=pending.pk, decision="approve", reason="looks right", user=reviewer
            )
    runs = list(Run.objects.order_by("created_at", "pk"))
    assert not [run for run in runs if run.status not in Run.FINISHED_STATUSES]
    return runs


@pytest.fixture
def recorded_run(publish, submit) -> Run:
    """A finished run of a small released workflow: two steps on builtin models."""
    publish(
        two_builtin_steps("small_flow"), bindings=BUILTIN_BINDINGS, model_configs={"builtin-pricey": PRICEY}
    )
    run = advance(submit("small_flow"))
    assert run.status == Run.Status.SUCCEEDED
    return run
