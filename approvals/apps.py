from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    """Approval requests, the reviewers' inbox, decisions and escalation."""

    name = "approvals"
