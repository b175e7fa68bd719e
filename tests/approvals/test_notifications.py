"""Notices on created, advanced, escalated and decided requests: email and a signed webhook."""

import hashlib
import hmac
import logging
from datetime import timedelta

import pytest
from django.core import mail
from django.db.models.functions import Now

from approvals import services
from approvals.models import ReviewerClearance
from approvals.notifiers import SIGNATURE_HEADER, WebhookNotifier, notice_for
from controlplane.celery import app as celery_app
from controlplane.errors import Forbidden
from controlplane.identity import REVIEWER
from runs.models import PendingAction
from tests.factories import UserFactory

from .webhook_server import WebhookReceiver

pytestmark = pytest.mark.django_db
SECRET = "webhook-secret-for-tests"


@pytest.fixture
def receiver():
    server = WebhookReceiver().start()
    yield server
    server.stop()


@pytest.fixture
def notifiers(settings, receiver):
    """Both notifiers configured; their tasks run in process (the worker path is tested elsewhere)."""
    settings.APPROVAL_NOTIFIERS = ["approvals.notifiers.EmailNotifier", "approvals.notifiers.WebhookNotifier"]
    settings.APPROVAL_WEBHOOK_URL = receiver.url
    settings.APPROVAL_WEBHOOK_SECRET = SECRET
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    celery_app.conf.task_always_eager = True
    yield receiver
    celery_app.conf.task_always_eager = False


def events(receiver) -> list[str]:
    return [delivery.headers["X-Baton-Event"] for delivery in receiver.deliveries]


def test_created_and_decided_are_sent_once_the_change_commits(
    notifiers, parked, reviewer, requester, django_capture_on_commit_callbacks
):
    reviewer.email, requester.email = "reviewer@example.org", "requester@example.org"
    reviewer.save()
    requester.save()
    # In the group but not cleared for the request's (internal) data: not told of it.
    uncleared = UserFactory(username="uncleared", roles=[REVIEWER], email="uncleared@example.org")
    ReviewerClearance.objects.create(user=uncleared, level=ReviewerClearance.Level.PUBLIC)
    with django_capture_on_commit_callbacks(execute=True):
        pending = parked()
    assert events(notifiers) == ["approval.created"]
    assert [message.to for message in mail.outbox] == [["reviewer@example.org"]]
    assert "needs your decision" in mail.outbox[0].subject
    assert f"/approvals/{pending.pk}/" in mail.outbox[0].body

    with django_capture_on_commit_callbacks(execute=True):
        services.approval_decide(
            pending_action_id=pending.pk, decision="approve", reason="fine", user=reviewer
        )
    assert events(notifiers) == ["approval.created", "approval.decided"]
    decided = notifiers.deliveries[-1].body
    assert decided["status"] == "approved" and decided["decision"]["reviewer"] == "reviewer"
    assert "args" not in str(decided)  # the proposed action's arguments stay inside Baton
    assert mail.outbox[-1].to == ["requester@example.org"] and "was approved" in mail.outbox[-1].subject


def test_a_refused_decision_sends_nothing(
    notifiers, parked, platform_user, django_capture_on_commit_callbacks
):
    pending = parked()
    with django_capture_on_commit_callbacks(execute=True) as callbacks, pytest.raises(Forbidden):
        services.approval_decide(
            pending_action_id=pending.pk, decision="approve", reason="", user=platform_user
        )
    assert callbacks == [] and notifiers.deliveries == []


def test_escalation_is_notified(notifiers, parked, django_capture_on_commit_callbacks):
    pending = parked()
    PendingAction.objects.filter(pk=pending.pk).update(due_at=Now() - timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=True):
        services.approvals_escalate_due()
    assert events(notifiers) == ["approval.escalated"]
    assert notifiers.deliveries[0].body["approver_group"] == "platform"


def test_the_webhook_is_signed_and_its_secret_never_logged(notifiers, parked, caplog):
    pending = parked()
    caplog.set_level(logging.DEBUG)
    WebhookNotifier().send(notice_for("created", pending))
    delivery = notifiers.deliveries[0]
    expected = hmac.new(SECRET.encode(), delivery.raw, hashlib.sha256).hexdigest()
    assert delivery.headers[SIGNATURE_HEADER] == f"sha256={expected}"
    assert delivery.headers["Content-Type"] == "application/json"
    assert delivery.body["pending_action"] == pending.pk and delivery.body["event"] == "created"
    assert SECRET not in caplog.text


def test_a_failing_webhook_raises_for_the_task_to_retry(settings, parked):
    from approvals.notifiers import NotifierError

    failing = WebhookReceiver(status=503).start()
    try:
        settings.APPROVAL_WEBHOOK_URL, settings.APPROVAL_WEBHOOK_SECRET = failing.url, SECRET
        with pytest.raises(NotifierError, match="503"):
            WebhookNotifier().send(notice_for("created", parked()))
    finally:
        failing.stop()
