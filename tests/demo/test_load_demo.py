from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from controlplane.audit import verify_chain
from controlplane.identity import actor_for
from controlplane.models import AuditEvent
from registry.models import Agent, Channel, Release
from registry.services.releases import channel_rollback, release_record_evaluation
from runs.models import Run

pytestmark = pytest.mark.django_db


def test_demo_loads_users_registry_and_runs_once(capsys):
    call_command("load_demo")
    first = capsys.readouterr().out
    counts = (Release.objects.count(), Agent.objects.count(), Run.objects.count())

    call_command("load_demo")

    assert "requester-demo-pass" in first and "Releases: rel_" in first
    assert counts == (Release.objects.count(), Agent.objects.count(), Run.objects.count())
    assert Agent.objects.filter(status="active").count() == 10
    staging = Channel.objects.get(workflow="support_case_resolution", name="staging")
    production = Channel.objects.get(workflow="support_case_resolution", name="production")
    assert staging.release is not None and production.requires_gates
    assert (production.baseline_id, production.mode, production.canary_percent) == (
        staging.release_id,
        "canary",
        10,
    )
    assert production.release.manifest["agents"]["response_writer"]["model_config"] == "builtin-tuned"
    assert Run.objects.count() == 8
    assert Run.objects.filter(workflow="support_case_resolution", channel="staging").count() == 3
    assert Run.objects.filter(workflow="data_pipeline_review", channel="staging").count() == 3
    assert verify_chain().ok


def test_loading_again_leaves_production_as_its_users_left_it(capsys):
    call_command("load_demo")
    platform = get_user_model().objects.get(username="platform")
    production = Channel.objects.get(workflow="support_case_resolution", name="production")
    canary, stable = production.release, production.baseline
    channel_rollback(channel=production, actor=actor_for(platform), reason="canary misbehaves")
    release_record_evaluation(
        release=canary,
        suite="support-regression",
        score=Decimal("0.40"),
        details={},
        recorded_by=platform,
        actor=actor_for(platform),
    )
    changes = AuditEvent.objects.filter(action__startswith="channel.").count()

    call_command("load_demo")  # what `make run` does at every start

    production.refresh_from_db()
    assert (production.release, production.mode) == (stable, "full")
    assert AuditEvent.objects.filter(action__startswith="channel.").count() == changes
    assert verify_chain().ok


def test_demo_is_refused_in_production(settings):
    settings.PRODUCTION = True
    with pytest.raises(CommandError, match="production"):
        call_command("load_demo")
