"""Workflow metrics per release, automatic rollback of a worse canary, the dashboard and /metrics."""

from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.core import mail
from django.utils import timezone

from approvals.models import ApprovalDecision
from controlplane.identity import Actor
from controlplane.models import AuditEvent
from monitoring.models import Incident
from monitoring.rollback import auto_rollback_check, canary_comparison
from monitoring.workflow_metrics import workflow_metrics
from policy.models import PolicyDecision
from registry.models import Channel, Release
from registry.services import releases as release_services
from registry.services.artifacts import artifact_publish
from runs.models import PendingAction, Run
from tests.factories import RunFactory

pytestmark = pytest.mark.django_db
ACTOR = Actor("platform", roles=frozenset({"platform"}))
WORKFLOW = "support_case_resolution"


@pytest.fixture
def canary(demo_registry, platform_user, settings) -> Channel:
    """staging: a second release as a 10% canary over the first."""
    settings.ROLLBACK_MIN_RUNS = 4
    first = Release.objects.get()
    artifact_publish(
        kind="prompt",
        name="triage",
        content={"template": "Classify: {{ text }}", "variables_schema": {"type": "object"}},
        author=platform_user,
        actor=ACTOR,
    )
    second = release_services.release_create(
        spec={"workflow": WORKFLOW, "policy_bundle": "default", "agents": first.manifest["agents"]},
        author=platform_user,
        actor=ACTOR,
    ).release
    return release_services.release_promote(
        release=second, channel="staging", mode="canary", canary_percent=10, actor=ACTOR
    )


def finished_runs(
    channel: Channel, release_id: str, count: int, *, unsafe: int = 0, status="succeeded"
) -> list[Run]:
    now = timezone.now()
    runs = RunFactory.create_batch(
        count,
        workflow=channel.workflow,
        channel=channel.name,
        release_id=release_id,
        status=status,
        finished_at=now + timedelta(seconds=30),
        spent={"cost_usd": 0.01, "tokens": 100},
    )
    for run in runs[:unsafe]:
        PolicyDecision.objects.create(
            decision_point="tool.call",
            input_version=1,
            input={"tool": {"name": "crm.refund", "side_effect": "irreversible"}},
            input_digest="0" * 64,
            bundle_name="default",
            bundle_digest="0" * 64,
            engine="embedded",
            allow=False,
            require_approval=False,
            reasons=["the agent's scope does not allow crm.refund"],
            latency_us=100,
            trace_id=run.trace_id,
            run_id=str(run.pk),
        )
    return runs


def test_workflow_metrics_of_a_set_of_runs(reviewer):
    runs = RunFactory.create_batch(3, status="succeeded", spent={"cost_usd": 0.5})
    RunFactory(status="dead_lettered", spent={"cost_usd": 0.5})
    RunFactory(status="running")
    for run in runs:
        Run.objects.filter(pk=run.pk).update(finished_at=run.created_at + timedelta(seconds=10))
    rejected = PendingAction.objects.create(
        run=runs[0],
        state="commit",
        proposed_action={"tool": "crm.refund", "args": {}},
        action_hash="a" * 64,
        risk={"side_effect": "irreversible"},
        status=PendingAction.Status.REJECTED,
    )
    ApprovalDecision.objects.create(
        pending_action=rejected,
        reviewer=reviewer,
        decision="reject",
        reason="no",
        approver_group="reviewer",
        action_hash=rejected.action_hash,
    )

    metrics = workflow_metrics(Run.objects.all())

    assert (metrics.runs, metrics.finished, metrics.completed, metrics.leaked) == (5, 4, 3, 1)
    assert metrics.completion_rate == 0.75 and metrics.exception_leakage == 0.25
    assert metrics.mean_time_to_resolution_s == pytest.approx(10.0)
    assert metrics.unsafe_actions == 1 and metrics.unsafe_action_rate == pytest.approx(0.2)
    assert metrics.cost_per_completed_usd == pytest.approx(
        (4 * 0.5 + 2.0) / 3
    )  # four runs' cost plus one review


def test_a_canary_with_a_higher_unsafe_action_rate_is_rolled_back(
    canary, platform_user, django_capture_on_commit_callbacks
):
    platform_user.email = "platform@example.org"
    platform_user.save()
    canary_release, baseline = canary.release_id, canary.baseline_id
    finished_runs(canary, canary_release, 5, unsafe=2)
    finished_runs(canary, baseline, 5, unsafe=0)

    with django_capture_on_commit_callbacks(execute=True):
        [incident] = auto_rollback_check()

    channel = Channel.objects.get(pk=canary.pk)
    assert (channel.release_id, channel.mode) == (baseline, "full")
    assert incident.release_id == canary_release and incident.baseline_id == baseline
    assert incident.breaches == ["unsafe action rate 40.0% against the baseline's 0.0%"]
    assert incident.release_metrics["unsafe_actions"] == 2
    events = AuditEvent.objects.filter(release_id=canary_release).values_list("action", "actor")
    assert ("incident.opened", "system:auto-rollback") in events
    assert (
        AuditEvent.objects.filter(action="channel.rolled_back").exists()
        or channel.changes.filter(action="rollback", actor="system:auto-rollback").exists()
    )
    assert [message.to for message in mail.outbox] == [["platform@example.org"]]
    assert auto_rollback_check() == []  # a full channel is not checked again


def test_an_equal_canary_stays(canary):
    finished_runs(canary, canary.release_id, 5, unsafe=1)
    finished_runs(canary, canary.baseline_id, 5, unsafe=1)
    assert auto_rollback_check() == []
    assert Channel.objects.get(pk=canary.pk).release_id == canary.release_id
    assert not Incident.objects.exists()


def test_too_few_runs_are_not_judged(canary):
    finished_runs(canary, canary.release_id, 3, unsafe=3)
    finished_runs(canary, canary.baseline_id, 5)
    comparison = canary_comparison(canary)
    assert not comparison.enough_runs and comparison.breaches == []
    assert auto_rollback_check() == []


def test_leakage_and_cost_thresholds(canary, settings):
    finished_runs(canary, canary.release_id, 4)
    finished_runs(canary, canary.release_id, 2, status="failed")
    finished_runs(canary, canary.baseline_id, 6)
    breaches = canary_comparison(canary).breaches
    assert breaches[0] == "exception leakage 33.3% against the baseline's 0.0%"
    assert breaches[1].startswith("cost per completed task $0.0150 against the baseline's $0.0100")


def test_the_dashboard_shows_canary_against_baseline(canary, signed_in, platform_user, reviewer):
    finished_runs(canary, canary.release_id, 2)
    finished_runs(canary, canary.baseline_id, 2)
    response = signed_in(platform_user).get("/monitoring/")
    assert response.status_code == 200
    body = response.content.decode()
    assert (
        f"Canary <code>{canary.release_id}</code>" in body
        and f"Baseline <code>{canary.baseline_id}</code>" in body
    )
    assert "Not enough finished runs" in body and "<polyline" in body
    assert signed_in(reviewer).get("/monitoring/").status_code == 403


def test_the_dashboard_takes_the_same_queries_for_few_or_many_runs(canary, signed_in, platform_user):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = signed_in(platform_user)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/monitoring/").status_code == 200
        return len(captured)

    finished_runs(canary, canary.release_id, 2)
    few = queries()
    finished_runs(canary, canary.release_id, 20)
    finished_runs(canary, canary.baseline_id, 20)
    assert queries() == few


def test_the_dashboards_incidents_take_the_same_queries_for_few_or_many(canary, signed_in, platform_user):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = signed_in(platform_user)
    channels = [canary, *(Channel.objects.create(workflow=WORKFLOW, name=f"lane-{n}") for n in range(4))]

    def pulled(count: int) -> None:
        for n in range(count):
            Incident.objects.create(
                kind=Incident.Kind.AUTO_ROLLBACK,
                channel=channels[n % len(channels)],
                release=canary.release,
                baseline=canary.baseline,
                breaches=["exception leakage 40.0% against the baseline's 0.0%"],
                release_metrics={},
                baseline_metrics={},
            )

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/monitoring/").status_code == 200
        return len(captured)

    pulled(1)
    few = queries()
    pulled(9)
    assert queries() == few
    assert client.get("/monitoring/").content.decode().count("exception leakage 40.0%") == 10


def test_metrics_need_the_token_or_a_platform_sign_in(client, signed_in, platform_user, reviewer, settings):
    settings.METRICS_TOKEN = "scrape-secret"
    RunFactory(status="dead_lettered")
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    scraped = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret")
    assert scraped.status_code == 200
    text = scraped.content.decode()
    assert 'baton_runs{status="dead_lettered",workflow="builtin.intake"} 1.0' in text
    for name in (
        "baton_step_duration_seconds_bucket",
        "baton_step_retries_total",
        "baton_dead_letters_total",
        "baton_policy_decisions_total",
        "baton_approvals_pending",
        "baton_approval_wait_seconds_count",
        "baton_model_fallbacks_total",
        "baton_model_circuit_open",
    ):
        assert name in text
    assert signed_in(reviewer).get("/metrics").status_code == 403
    assert signed_in(platform_user).get("/metrics").status_code == 200


@pytest.mark.skipif(not settings.REDIS_URL, reason="circuits are shared through Redis")
def test_the_scrape_shows_the_circuits_every_worker_shares(signed_in, platform_user):
    """Workers keep each model endpoint's circuit in Redis; any web process reports all of them."""
    endpoint = "openai_compatible|http://llm.internal/v1|qwen2.5-7b-instruct"
    state = redis.Redis.from_url(settings.REDIS_URL)
    key = f"baton:model-circuit:{endpoint}:pybreaker:state"
    state.set(key, "open")
    try:
        text = signed_in(platform_user).get("/metrics").content.decode()
    finally:
        state.delete(key)
    assert f'baton_model_circuit_open{{endpoint="{endpoint}"}} 1.0' in text


def test_trend_lines_scale_rates_and_draw_a_single_day_level():
    from monitoring.templatetags.charts import polyline

    assert polyline([{"rate": 0.5}], "rate") == "0.0,30.0 280.0,30.0"
    assert polyline([{"rate": 1.0}, {"rate": None}, {"rate": 0.0}], "rate") == "0.0,0.0 280.0,60.0"
    assert polyline([{"rate": None}], "rate") == ""
