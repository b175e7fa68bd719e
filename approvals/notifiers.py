"""Telling people that an approval request needs them, or what became of it.

`APPROVAL_NOTIFIERS` lists dotted paths of notifier classes; each has `send(notice)`.
Notices are built when the change happens and delivered by a Celery task once its
transaction commits, one task per notifier, so a slow or failing webhook never holds a
reviewer's request and is retried on its own. Notices carry ids, status and reasons, never
the proposed action's arguments (they may hold customer data).
"""

import hashlib
import hmac
import json
import uuid
from dataclasses import asdict, dataclass, field
from typing import Protocol

import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import transaction
from django.utils.module_loading import import_string

from controlplane import broker
from runs.models import PendingAction

from .selectors import users_who_may_decide

EVENTS = ("created", "advanced", "escalated", "decided", "expired")
SIGNATURE_HEADER = "X-Baton-Signature"


@dataclass(frozen=True)
class ApprovalNotice:
    event: str
    pending_action: int
    run: str
    workflow: str
    state: str
    status: str
    approver_group: str
    due_at: str | None
    reasons: list[str]
    risk: str
    sensitivity: str
    url: str
    requested_by: str = ""
    decision: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


class Notifier(Protocol):
    def send(self, notice: ApprovalNotice) -> None: ...


class NotifierError(Exception):
    """A delivery that failed and may succeed when tried again."""


class EmailNotifier:
    """Mail through Django's mail backend: the group that must act, or the requester once the
    request is closed."""

    def send(self, notice: ApprovalNotice) -> None:
        recipients = self._recipients(notice)
        if not recipients:
            return
        send_mail(
            subject=self.subject(notice),
            message=self.body(notice),
            from_email=settings.DEFAULT_FROM_EMAIL,
            recipient_list=recipients,
        )

    def _recipients(self, notice: ApprovalNotice) -> list[str]:
        if notice.event in ("decided", "expired"):
            users = get_user_model().objects.filter(username=notice.requested_by)
        else:
            users = users_who_may_decide(notice.approver_group, notice.sensitivity, notice.requested_by)
        users = users.filter(is_active=True).exclude(email="")
        return sorted(set(users.values_list("email", flat=True)))

    @staticmethod
    def subject(notice: ApprovalNotice) -> str:
        what = {
            "created": "needs your decision",
            "advanced": "needs your group's decision",
            "escalated": "was escalated to your group",
            "decided": f"was {notice.status}",
            "expired": "expired",
        }[notice.event]
        return f"[Baton] Approval {notice.pending_action} ({notice.workflow} / {notice.state}) {what}"

    @staticmethod
    def body(notice: ApprovalNotice) -> str:
        lines = [
            f"Workflow: {notice.workflow}, step {notice.state}",
            f"Run: {notice.run}",
            f"Status: {notice.status}; approver group: {notice.approver_group}; due: {notice.due_at or '-'}",
            f"Risk: {notice.risk}; data: {notice.sensitivity}",
            "Why it stopped:",
            *(f"  - {reason}" for reason in notice.reasons),
        ]
        if notice.decision:
            lines.append(
                f"Decision: {notice.decision['decision']} by {notice.decision['reviewer']}: "
                f"{notice.decision['reason'] or '(no reason given)'}"
            )
        lines.append(f"Open: {notice.url}")
        return "\n".join(lines)


class WebhookNotifier:
    """POST the notice as JSON to APPROVAL_WEBHOOK_URL, signed with HMAC-SHA256 of the body
    under APPROVAL_WEBHOOK_SECRET (`X-Baton-Signature: sha256=<hex>`)."""

    def __init__(self) -> None:
        self.url = settings.APPROVAL_WEBHOOK_URL
        self.secret = settings.APPROVAL_WEBHOOK_SECRET
        self.timeout = settings.APPROVAL_WEBHOOK_TIMEOUT_SECONDS

    def send(self, notice: ApprovalNotice) -> None:
        if not self.url:
            return
        body = json.dumps(notice.as_dict(), sort_keys=True, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Baton-Event": f"approval.{notice.event}",
            "X-Baton-Delivery": str(uuid.uuid4()),
        }
        if self.secret:
            headers[SIGNATURE_HEADER] = "sha256=" + signature(self.secret, body)
        try:
            response = requests.post(self.url, data=body, headers=headers, timeout=self.timeout)
        except requests.RequestException as error:
            raise NotifierError(f"webhook unreachable: {type(error).__name__}") from None
        if response.status_code >= 300:
            raise NotifierError(f"webhook answered {response.status_code}")


def signature(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def notice_for(event: str, pending: PendingAction, decision=None) -> ApprovalNotice:
    base = settings.BATON_BASE_URL.rstrip("/")
    return ApprovalNotice(
        event=event,
        pending_action=pending.pk,
        run=str(pending.run_id),
        workflow=pending.workflow,
        state=pending.state,
        status=pending.status,
        approver_group=pending.approver_group,
        due_at=pending.due_at.isoformat() if pending.due_at else None,
        reasons=[str(reason) for reason in pending.reasons],
        risk=PendingAction.Risk(pending.risk_rank).label,
        sensitivity=pending.sensitivity,
        url=f"{base}/approvals/{pending.pk}/",
        requested_by=pending.requested_by.get_username() if pending.requested_by_id else "",
        decision=(
            {
                "decision": decision.decision,
                "reviewer": decision.reviewer.get_username(),
                "reason": decision.reason,
            }
            if decision is not None
            else {}
        ),
    )


def configured_notifiers() -> list[str]:
    return list(settings.APPROVAL_NOTIFIERS)


def load_notifier(path: str) -> Notifier:
    return import_string(path)()


def notify_on_commit(event: str, pending: PendingAction, decision=None) -> None:
    """Snapshot the notice now; hand it to each notifier's task once the change commits."""
    paths = configured_notifiers()
    if not paths:
        return
    notice = notice_for(event, pending, decision).as_dict()

    def enqueue() -> None:
        from .tasks import deliver_approval_notice

        for path in paths:
            broker.send(deliver_approval_notice, path, notice, if_lost="this notice is not sent")

    transaction.on_commit(enqueue)
