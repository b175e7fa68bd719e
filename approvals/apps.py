from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    """Approval requests, the reviewers' inbox, decisions and escalation."""

    name = "approvals"
    append_only_tables = ("approvals_approvaldecision",)

    def ready(self) -> None:
        from django.db.models.signals import post_save

        from runs.models import PendingAction

        # The run engine, a lower layer, creates requests without knowing this app exists;
        # the request is set up in the engine's transaction.
        post_save.connect(_request_created, sender=PendingAction, dispatch_uid="approval-request-created")


def _request_created(sender, instance, created: bool, raw: bool = False, **kwargs) -> None:
    if created and not raw:
        from .services import approval_request_open

        approval_request_open(pending=instance)
