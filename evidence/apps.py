from django.apps import AppConfig


class EvidenceConfig(AppConfig):
    """Signed evidence packages and signed checkpoints of the audit chain's head."""

    name = "evidence"
    append_only_tables = ("evidence_auditcheckpoint",)
