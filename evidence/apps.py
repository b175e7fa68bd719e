from django.apps import AppConfig


class EvidenceConfig(AppConfig):
    """Signed evidence packages and signed checkpoints of the audit chain's head."""

    name = "evidence"
    append_only_tables = ("evidence_auditcheckpoint",)

    def ready(self) -> None:
        from django.core import checks

        from .signing import check_signing_key

        checks.register(check_signing_key, "evidence")
