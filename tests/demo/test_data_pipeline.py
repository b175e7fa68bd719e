"""The data pipeline review workflow of the demo, in process: each kind of batch, end to end."""

from pathlib import Path

import pytest
from django.conf import settings

from approvals.services import approval_decide
from controlplane.identity import actor_for
from registry.services.bundles import bundle_apply, load_bundle_file
from runs import services
from runs.models import Run
from sandbox.models import CatalogEntry

pytestmark = pytest.mark.django_db
PIPELINE_BUNDLE = Path(settings.BASE_DIR) / "demo" / "bundles" / "data_pipeline_review.yaml"


@pytest.fixture
def review(platform_user, requester):
    bundle_apply(
        bundle=load_bundle_file(PIPELINE_BUNDLE), author=platform_user, actor=actor_for(platform_user)
    )

    def review_batch(dataset: str, batch_id: str) -> Run:
        run = services.task_submit(
            requester=requester,
            actor=actor_for(requester),
            workflow="data_pipeline_review",
            case_id=f"{dataset}/{batch_id}",
            input={"dataset": dataset, "batch_id": batch_id},
            channel="staging",
        ).run
        services.run_advance(run_id=str(run.pk), worker="test")
        return Run.objects.get(pk=run.pk)

    return review_batch


def steps(run: Run) -> list[str]:
    return list(run.checkpoints.order_by("sequence").values_list("state", flat=True))


def test_a_clean_batch_is_published_without_a_steward(review):
    run = review("orders_daily", "2026-11-19")
    assert run.status == Run.Status.SUCCEEDED, run.error
    assert steps(run) == [
        *("ingest", "validate_schema", "detect_anomalies", "tag_lineage"),
        *("report", "steward_approval", "publish"),
    ]
    entry = CatalogEntry.objects.get(batch__batch_id="2026-11-19")
    assert (entry.severity, entry.status, entry.tags) == ("low", "published", ["finance", "pii"])
    assert entry.lineage == {
        "dataset": "orders_daily",
        "source": "warehouse.orders",
        "upstream": ["checkout_events"],
    }
    assert entry.report == "Batch 2026-11-19 of orders_daily: severity low. Findings: no anomalies found."


def test_a_high_severity_batch_waits_for_a_steward(review, reviewer):
    run = review("orders_daily", "2026-11-20")
    assert run.status == Run.Status.WAITING_APPROVAL
    pending = run.pending_actions.get()
    assert pending.state == "steward_approval" and "severity == 'high'" in pending.reasons
    assert not CatalogEntry.objects.exists()

    approval_decide(
        pending_action_id=pending.pk, decision="approve", reason="known upstream bug", user=reviewer
    )
    services.run_advance(run_id=str(run.pk), worker="test")

    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED
    entry = CatalogEntry.objects.get()
    assert entry.severity == "high"
    assert "1 null value(s) in customer_id" in entry.report and "1 negative amount(s)" in entry.report


def test_a_schema_change_is_medium_and_published_with_its_findings(review):
    run = review("orders_daily", "2026-11-21")
    assert run.status == Run.Status.SUCCEEDED
    validation = run.checkpoints.get(state="validate_schema").output
    assert validation["missing_columns"] == ["currency"] and validation["unexpected_columns"] == ["coupon"]
    entry = CatalogEntry.objects.get()
    assert entry.severity == "medium" and "the schema changed" in entry.report


def test_an_unknown_batch_fails_the_run_with_the_reason(review):
    run = review("orders_daily", "1999-01-01")
    assert run.status in (Run.Status.FAILED, Run.Status.DEAD_LETTERED)
    assert "no batch '1999-01-01'" in run.error
