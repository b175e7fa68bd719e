"""The evidence API and pages: who may export, bad requests, background exports with progress."""

from datetime import UTC, datetime

import pytest
from django.db import DatabaseError

from controlplane.identity import actor_for
from controlplane.models import AuditEvent
from evidence.collect import Scope
from evidence.models import AuditCheckpoint, EvidenceExport
from evidence.services import evidence_export_build, evidence_export_start, export_path
from runs.models import Run

from .conftest import verifier

pytestmark = pytest.mark.django_db


def streamed(response) -> bytes:
    return b"".join(response.streaming_content)


def test_only_auditors_and_admins_export_evidence(
    approved_and_compensated_run, api_client, client_for, auditor, admin_user, reviewer, requester, tmp_path
):
    url = f"/api/v1/evidence?run={approved_and_compensated_run.pk}"
    assert api_client.get(url).status_code == 401
    assert client_for(requester, scopes=["audit:read"]).get(url).status_code == 403
    assert client_for(reviewer, scopes=["audit:read"]).get(url).status_code == 403
    assert client_for(auditor, scopes=["runs:read"]).get(url).status_code == 403
    for user in (auditor, admin_user):
        response = client_for(user, scopes=["audit:read"]).get(url + "&format=csv")
        assert response.status_code == 200, response.content
        assert response["Content-Type"] == "application/zip"
        path = tmp_path / f"{user.username}.zip"
        path.write_bytes(streamed(response))
        assert verifier.verify_package(path)["evidence_format"] == "csv"
    assert AuditEvent.objects.filter(action="evidence.exported").count() == 2


@pytest.mark.parametrize(
    ("query", "status", "detail"),
    [
        ("", 422, "Choose one scope"),
        ("run=00000000-0000-0000-0000-000000000000&release=rel_x", 422, "Choose one scope"),
        ("run=00000000-0000-0000-0000-000000000000", 404, "No run"),
        ("release=rel_missing", 404, "No release"),
        ("since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z", 422, "start must be before"),
        ("since=yesterday", 422, ""),
        ("since=2026-01-01T00:00:00Z&format=xml", 422, ""),
        ("since=2026-01-01T00:00:00Z&colour=red", 422, ""),
    ],
)
def test_bad_evidence_requests_get_problem_details(client_for, auditor, query, status, detail):
    response = client_for(auditor, scopes=["audit:read"]).get(f"/api/v1/evidence?{query}")
    assert response.status_code == status
    assert response["Content-Type"] == "application/problem+json"
    assert detail in response.json()["detail"]
    assert not AuditEvent.objects.filter(action="evidence.exported").exists()


def test_a_pdf_of_too_many_runs_is_refused_with_a_way_out(
    approved_and_compensated_run, client_for, auditor, settings
):
    settings.EVIDENCE_PDF_MAX_RUNS = 0
    response = client_for(auditor, scopes=["audit:read"]).get(
        f"/api/v1/evidence?release={approved_and_compensated_run.release_id}&format=pdf"
    )
    assert response.status_code == 422 and "export JSON or CSV" in response.json()["detail"]


def test_the_public_key_and_ledger_status_endpoints(client_for, auditor):
    client = client_for(auditor, scopes=["audit:read"])
    key = client.get("/api/v1/evidence/public-key").json()
    assert len(key["key_id"]) == 16 and key["public_key"].startswith("-----BEGIN PUBLIC KEY-----")
    status = client.get("/api/v1/audit/status").json()
    assert status["ok"] is True and status["chain"]["ok"] is True


def test_the_evidence_page_builds_a_package_with_progress(
    approved_and_compensated_run, signed_in, auditor, django_capture_on_commit_callbacks, tmp_path, settings
):
    settings.EVIDENCE_EXPORT_DIR = str(tmp_path)
    client = signed_in(auditor)
    assert client.get("/evidence/").status_code == 200
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post("/evidence/exports", {"since": "2000-01-01T00:00", "format": "json"})
    assert response.status_code == 302 and len(callbacks) == 1  # the build is queued for a worker
    export = EvidenceExport.objects.get()
    assert (export.status, export.runs_total, export.percent) == ("queued", 1, 0)

    evidence_export_build(export.pk)  # what the worker's task runs

    export.refresh_from_db()
    assert (export.status, export.runs_done, export.percent) == ("ready", 1, 100)
    assert verifier.verify_package(export_path(export))["runs"] == 1
    rows = client.get("/evidence/exports/list")
    assert b"progress" in rows.content and export.filename.encode() in rows.content
    assert b"hx-trigger" not in rows.content  # nothing left to poll for
    download = client.get(f"/evidence/exports/{export.pk}/download")
    assert (
        download.status_code == 200
        and b"".join(download.streaming_content) == export_path(export).read_bytes()
    )


def test_an_export_that_cannot_be_queued_is_not_audited_as_exported(auditor, monkeypatch):
    def refused(**fields):
        raise DatabaseError("could not extend the exports table")

    monkeypatch.setattr(EvidenceExport.objects, "create", refused)

    with pytest.raises(DatabaseError):
        evidence_export_start(
            scope=Scope(since=datetime(2000, 1, 1, tzinfo=UTC)),
            format="json",
            user=auditor,
            actor=actor_for(auditor),
        )

    assert not AuditEvent.objects.filter(action="evidence.exported").exists()
    assert not AuditCheckpoint.objects.exists()


def test_the_evidence_page_explains_a_bad_request(signed_in, auditor):
    response = signed_in(auditor).post("/evidence/exports", {"format": "json"})
    assert response.status_code == 422 and b"Choose one scope" in response.content
    assert not EvidenceExport.objects.exists()


def test_evidence_pages_are_for_auditors_and_admins(signed_in, reviewer, platform_user, client):
    assert client.get("/evidence/").status_code == 302  # to the login page
    for user in (reviewer, platform_user):
        assert signed_in(user).get("/evidence/").status_code == 403


def test_someone_elses_export_cannot_be_downloaded(
    approved_and_compensated_run, signed_in, auditor, admin_user, tmp_path, settings
):
    settings.EVIDENCE_EXPORT_DIR = str(tmp_path)
    signed_in(auditor).post(
        "/evidence/exports", {"run": str(approved_and_compensated_run.pk), "format": "csv"}
    )
    export = EvidenceExport.objects.get()
    evidence_export_build(export.pk)
    assert signed_in(admin_user).get(f"/evidence/exports/{export.pk}/download").status_code == 404


def test_the_ledger_fragment_reports_the_chain(signed_in, auditor, approved_and_compensated_run):
    response = signed_in(auditor).get("/evidence/ledger", HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and b"intact" in response.content
    assert b"<html" not in response.content  # the card's new content, for htmx
    assert Run.objects.count() == 1


def test_without_javascript_the_ledger_check_is_a_page(signed_in, auditor, approved_and_compensated_run):
    page = signed_in(auditor).get("/evidence/ledger").content.decode()
    assert "<title>Audit ledger · Baton</title>" in page and 'class="topbar"' in page
    assert "intact" in page and 'href="/evidence/"' in page
