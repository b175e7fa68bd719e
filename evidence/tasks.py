"""Background work of the evidence app; thin wrappers over its services."""

from celery import shared_task

from . import services


@shared_task(name="evidence.tasks.checkpoint_audit_chain")
def checkpoint_audit_chain() -> int | None:
    checkpoint = services.audit_checkpoint()
    return checkpoint.seq if checkpoint else None


@shared_task(name="evidence.tasks.sweep_lost_exports")
def sweep_lost_exports() -> int:
    return services.evidence_exports_sweep_lost()


@shared_task(name="evidence.tasks.build_evidence_export")
def build_evidence_export(export_id: int) -> None:
    try:
        services.evidence_export_build(export_id)
    except Exception as error:
        services.evidence_export_failed(export_id, error)
        raise
