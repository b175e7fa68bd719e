"""Evidence exports built by a worker: a message delivered twice never spoils the package."""

import hashlib
import threading
from datetime import UTC, datetime

import pytest
from django.db import connection

from controlplane.identity import actor_for
from controlplane.models import AuditEvent
from evidence.collect import Scope
from evidence.models import EvidenceExport
from evidence.services import (
    evidence_export_build,
    evidence_export_failed,
    evidence_export_start,
    evidence_exports_sweep_lost,
    export_path,
)
from evidence.tasks import sweep_lost_exports
from tests.integration.races import twice

from .conftest import verifier


@pytest.fixture
def queued_export(approved_and_compensated_run, auditor, settings, tmp_path) -> EvidenceExport:
    settings.EVIDENCE_EXPORT_DIR = str(tmp_path)
    return evidence_export_start(
        scope=Scope(run_id=str(approved_and_compensated_run.pk)),
        format="pdf",
        user=auditor,
        actor=actor_for(auditor),
    )


def assert_ready_and_intact(export: EvidenceExport) -> None:
    export.refresh_from_db()
    assert export.status == EvidenceExport.Status.READY, export.error
    package = export_path(export).read_bytes()
    assert (hashlib.sha256(package).hexdigest(), len(package)) == (export.package_digest, export.size)
    assert verifier.verify_package(export_path(export))["runs"] == 1
    assert [p.name for p in export_path(export).parent.iterdir()] == [export.filename]


@pytest.mark.django_db
def test_a_failure_reported_after_another_delivery_built_the_export_leaves_it_ready(queued_export):
    evidence_export_build(queued_export.pk)

    evidence_export_failed(queued_export.pk, OSError("disk full"))
    assert_ready_and_intact(queued_export)

    evidence_export_build(queued_export.pk)  # a third delivery finds it built
    assert_ready_and_intact(queued_export)


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="two builds at once, on two connections")
def test_two_deliveries_building_at_once_leave_one_intact_package(queued_export):
    start = threading.Barrier(2)
    errors: list[Exception] = []

    def build() -> None:
        try:
            start.wait()
            evidence_export_build(queued_export.pk)
        except Exception as error:  # what the task would report as the export's failure
            errors.append(error)
            evidence_export_failed(queued_export.pk, error)
        finally:
            connection.close()

    builds = [threading.Thread(target=build) for _ in range(2)]
    for thread in builds:
        thread.start()
    for thread in builds:
        thread.join(timeout=60)

    assert errors == []
    assert_ready_and_intact(queued_export)


@pytest.mark.django_db
def test_an_export_whose_message_was_lost_is_sent_again_by_the_sweeper(
    approved_and_compensated_run, auditor, settings, tmp_path, broker_down, django_capture_on_commit_callbacks
):
    settings.EVIDENCE_EXPORT_DIR = str(tmp_path)
    with django_capture_on_commit_callbacks(execute=True):  # the broker refuses the build's message
        export = evidence_export_start(
            scope=Scope(run_id=str(approved_and_compensated_run.pk)),
            format="json",
            user=auditor,
            actor=actor_for(auditor),
        )
    assert evidence_exports_sweep_lost() == 0  # not yet given up on

    EvidenceExport.objects.filter(pk=export.pk).update(enqueued_at=datetime(2000, 1, 1, tzinfo=UTC))
    with django_capture_on_commit_callbacks() as sent:
        assert evidence_exports_sweep_lost() == 1
    assert evidence_exports_sweep_lost() == 0  # sent again once, not at every sweep
    assert len(sent) == 1
    requeued = AuditEvent.objects.get(action="evidence.export_requeued")
    assert (requeued.actor, requeued.object_id) == ("system:sweeper", str(export.pk))

    evidence_export_build(export.pk)  # what the worker does with it
    assert_ready_and_intact(export)


def test_the_beat_sweeps_lost_exports_every_interval(settings):
    assert settings.CELERY_BEAT_SCHEDULE["sweep-lost-evidence-exports"] == {
        "task": sweep_lost_exports.name,
        "schedule": settings.EVIDENCE_EXPORT_SWEEP_INTERVAL_SECONDS,
    }


@pytest.mark.django_db
def test_an_export_asked_again_while_it_is_built_is_the_same_export(approved_and_compensated_run, auditor):
    def ask(format: str = "json") -> EvidenceExport:
        return evidence_export_start(
            scope=Scope(run_id=str(approved_and_compensated_run.pk)),
            format=format,
            user=auditor,
            actor=actor_for(auditor),
        )

    first = ask()
    assert ask() == first  # a double click
    assert ask(format="csv") != first  # another package
    assert AuditEvent.objects.filter(action="evidence.exported").count() == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="two requests at once, on two connections")
def test_an_export_asked_twice_at_once_is_queued_once(approved_and_compensated_run, auditor):
    def ask() -> EvidenceExport:
        return evidence_export_start(
            scope=Scope(run_id=str(approved_and_compensated_run.pk)),
            format="json",
            user=auditor,
            actor=actor_for(auditor),
        )

    first, second = twice(ask)

    assert first == second
    assert EvidenceExport.objects.count() == 1
    assert AuditEvent.objects.filter(action="evidence.exported").count() == 1
