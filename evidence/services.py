"""Evidence exports and checkpoints of the audit chain."""

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Now

from controlplane import broker
from controlplane.audit import ObjectRef, VerifyResult, record, verify_chain
from controlplane.canonical import canonical_json
from controlplane.dbtime import database_now, database_now_plus
from controlplane.errors import InvalidInput, NotFound
from controlplane.models import AuditEvent
from registry.models import Release
from runs.models import Run

from . import signing
from .collect import Scope
from .models import AuditCheckpoint, EvidenceExport
from .package import EvidencePackage

FORMATS = ("json", "csv", "pdf")
_CHECKPOINT_BATCH = 1000
SWEEPER_ACTOR = "system:sweeper"
# An export whose message was lost (the broker restarted, or was down when the export was asked
# for) stays queued; it is sent again after this long. A second delivery is harmless (see
# evidence_export_build); one merely waiting behind a long queue is sent again at most this often.
REQUEUE_AFTER_SECONDS = 600
_BUILD_IF_LOST = f"the export sweeper sends it again after {REQUEUE_AFTER_SECONDS} s"


def audit_checkpoint(reason: str = AuditCheckpoint.Reason.INTERVAL) -> AuditCheckpoint | None:
    """Sign the chain's current head. An interval checkpoint is skipped when nothing was appended
    since the last one; an export always gets its own."""
    head = AuditEvent.objects.order_by("-seq").values("seq", "hash").first()
    if head is None:
        return None
    last = AuditCheckpoint.objects.first()
    if reason == AuditCheckpoint.Reason.INTERVAL and last and last.seq == head["seq"]:
        return last
    checkpoint = AuditCheckpoint(
        seq=head["seq"],
        head_hash=head["hash"],
        created_at=database_now(),
        reason=reason,
        key_id=signing.key_id(),
    )
    checkpoint.signature = signing.sign(canonical_json(checkpoint.statement()))
    checkpoint.save(force_insert=True)
    return checkpoint


@dataclass(frozen=True)
class LedgerStatus:
    chain: VerifyResult
    checkpoints_checked: int
    last_checkpoint: AuditCheckpoint | None
    checkpoint_problem: str

    @property
    def ok(self) -> bool:
        return self.chain.ok and not self.checkpoint_problem

    def as_dict(self) -> dict:
        last = self.last_checkpoint
        return {
            "ok": self.ok,
            "chain": self.chain.as_dict(),
            "checkpoints_checked": self.checkpoints_checked,
            "checkpoint_problem": self.checkpoint_problem,
            "last_checkpoint": {**last.statement(), "signature": last.signature} if last else None,
        }


def ledger_status() -> LedgerStatus:
    """The chain verified link by link, then against every signed checkpoint: a checkpoint whose
    event is gone or different shows a truncated or rewritten tail that the links alone cannot."""
    chain = verify_chain()
    checked, problem = 0, ""
    checkpoints = AuditCheckpoint.objects.order_by("seq", "pk").iterator(chunk_size=_CHECKPOINT_BATCH)
    batch: list[AuditCheckpoint] = []
    for checkpoint in checkpoints:
        batch.append(checkpoint)
        if len(batch) == _CHECKPOINT_BATCH:
            problem = _checkpoint_problem(batch)
            checked += len(batch)
            batch = []
            if problem:
                break
    if batch and not problem:
        problem = _checkpoint_problem(batch)
        checked += len(batch)
    return LedgerStatus(chain, checked, AuditCheckpoint.objects.first(), problem)


def _checkpoint_problem(checkpoints: list[AuditCheckpoint]) -> str:
    hashes = dict(AuditEvent.objects.filter(seq__in=[c.seq for c in checkpoints]).values_list("seq", "hash"))
    this_key = signing.key_id()
    for checkpoint in checkpoints:
        signed_at = checkpoint.created_at.isoformat(timespec="seconds")
        if checkpoint.key_id == this_key and not signing.signature_valid(
            canonical_json(checkpoint.statement()), checkpoint.signature
        ):
            return f"the checkpoint of event #{checkpoint.seq} signed at {signed_at} has an invalid signature"
        if checkpoint.seq not in hashes:
            return (
                f"event #{checkpoint.seq}, covered by the checkpoint signed at {signed_at}, is missing: "
                "the ledger was truncated"
            )
        if hashes[checkpoint.seq] != checkpoint.head_hash:
            return f"event #{checkpoint.seq} differs from the checkpoint signed at {signed_at}"
    return ""


def evidence_scope(
    *, run_id: str = "", release_id: str = "", since: datetime | None = None, until: datetime | None = None
) -> Scope:
    """A checked scope: exactly one of a run, a release or a window."""
    chosen = [bool(run_id), bool(release_id), bool(since or until)]
    if sum(chosen) != 1:
        raise InvalidInput("Choose one scope: a run, a release, or a time window (since and/or until).")
    if since and until and since >= until:
        raise InvalidInput("The window's start must be before its end.", errors={"since": ["Before until."]})
    if run_id and not Run.objects.filter(pk=run_id).exists():
        raise NotFound(f"No run {run_id}.")
    if release_id and not Release.objects.filter(pk=release_id).exists():
        raise NotFound(f"No release {release_id}.")
    return Scope(run_id=run_id, release_id=release_id, since=since, until=until)


def evidence_prepare(*, scope: Scope, format: str, actor: Any) -> EvidencePackage:
    """Check the request, sign a checkpoint of the chain for the package and audit the export."""
    if format not in FORMATS:
        raise InvalidInput(
            f"The format is one of {', '.join(FORMATS)}.", errors={"format": ["Unknown format."]}
        )
    runs_total = scope.runs().count()
    if format == "pdf" and runs_total > settings.EVIDENCE_PDF_MAX_RUNS:
        raise InvalidInput(
            f"A PDF holds at most {settings.EVIDENCE_PDF_MAX_RUNS} runs and this scope has {runs_total}: "
            "export JSON or CSV, which stream, or narrow the scope."
        )
    with transaction.atomic():
        checkpoint = audit_checkpoint(AuditCheckpoint.Reason.EXPORT)
        event = record(
            actor,
            "evidence.exported",
            ObjectRef("evidence", scope.run_id or scope.release_id or "window"),
            {"scope": scope.as_dict(), "format": format, "runs": runs_total},
            run_id=scope.run_id,
            release_id=scope.release_id,
        )
        if checkpoint is None:  # the export's own event is the ledger's first
            checkpoint = audit_checkpoint(AuditCheckpoint.Reason.EXPORT)
    return EvidencePackage(
        scope=scope,
        format=format,
        runs_total=runs_total,
        checkpoint=checkpoint,
        created_by=str(actor),
        created_at=event.created_at.isoformat(),
    )


@transaction.atomic
def evidence_export_start(*, scope: Scope, format: str, user, actor: Any) -> EvidenceExport:
    """Queue an export for the evidence page: a worker builds it and reports its progress. The
    `evidence.exported` event and the export it audits are committed together, or neither is.
    Asked again (a double click) while the same export of the same person is still being built,
    that export is the answer: nothing is queued or audited twice."""
    # The person's row orders their requests: of two at once, the second sees the first's export.
    get_user_model().objects.select_for_update().filter(pk=user.pk).exists()
    unfinished = EvidenceExport.objects.filter(
        requested_by=user,
        scope=scope.as_dict(),
        format=format,
        status__in=(EvidenceExport.Status.QUEUED, EvidenceExport.Status.RUNNING),
    ).first()
    if unfinished is not None:
        return unfinished
    package = evidence_prepare(scope=scope, format=format, actor=actor)
    export = EvidenceExport.objects.create(
        scope=scope.as_dict(),
        format=format,
        checkpoint=package.checkpoint,
        created_by=package.created_by,
        runs_total=package.runs_total,
        requested_by=user,
    )
    _send_build_on_commit(export.pk)
    return export


def evidence_exports_sweep_lost(*, limit: int = 100) -> int:
    """Send again the exports still queued long after they were sent; how many. Each is a
    conditional update: overlapping sweeps send an export once."""
    lost = Q(status=EvidenceExport.Status.QUEUED, enqueued_at__lt=database_now_plus(-REQUEUE_AFTER_SECONDS))
    sent = 0
    for export_id in EvidenceExport.objects.filter(lost).values_list("pk", flat=True)[:limit]:
        with transaction.atomic():
            if not EvidenceExport.objects.filter(lost, pk=export_id).update(enqueued_at=Now()):
                continue  # built, or sent by an overlapping sweep, since the scan
            record(
                SWEEPER_ACTOR,
                "evidence.export_requeued",
                ObjectRef("evidence.evidenceexport", str(export_id)),
                {},
            )
            _send_build_on_commit(export_id)
            sent += 1
    return sent


def _send_build_on_commit(export_id: int) -> None:
    from .tasks import build_evidence_export

    broker.send_on_commit(build_evidence_export, export_id, if_lost=_BUILD_IF_LOST)


def evidence_export_build(export_id: int) -> EvidenceExport:
    """Write an export's package to the export directory, recording progress as runs are written.

    A second delivery of the same export (a worker lost and its message handed out again while
    the first still writes) builds its own file beside it; the first build to finish is the one
    kept, and the file in place is always the one whose digest and size the row records."""
    export = EvidenceExport.objects.select_related("checkpoint").get(pk=export_id)
    unfinished = EvidenceExport.objects.filter(pk=export.pk).exclude(status=EvidenceExport.Status.READY)
    if not unfinished.update(status=EvidenceExport.Status.RUNNING, runs_done=0):
        return export
    package = EvidencePackage(
        scope=Scope.from_dict(export.scope),
        format=export.format,
        runs_total=export.runs_total,
        checkpoint=export.checkpoint,
        created_by=export.created_by,
        created_at=export.created_at.isoformat(),
    )

    def progress(done: int) -> None:
        EvidenceExport.objects.filter(pk=export.pk).update(runs_done=done)

    path = export_path(export)
    path.parent.mkdir(parents=True, exist_ok=True)
    hasher, size = hashlib.sha256(), 0
    partial = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
    try:
        with partial.open("wb") as file:
            for chunk in package.chunks(progress):
                file.write(chunk)
                hasher.update(chunk)
                size += len(chunk)
        with transaction.atomic():
            # The row's lock orders builds that finish together: the later one finds it ready.
            if unfinished.select_for_update().exists():
                partial.replace(path)
                unfinished.update(
                    status=EvidenceExport.Status.READY,
                    runs_done=export.runs_total,
                    size=size,
                    package_digest=hasher.hexdigest(),
                    finished_at=Now(),
                )
    finally:
        partial.unlink(missing_ok=True)
    export.refresh_from_db()
    return export


def evidence_export_failed(export_id: int, error: Exception) -> None:
    """A build that failed; an export another delivery has built stays ready."""
    EvidenceExport.objects.filter(pk=export_id).exclude(status=EvidenceExport.Status.READY).update(
        status=EvidenceExport.Status.FAILED,
        error=f"{type(error).__name__}: {error}"[:2000],
        finished_at=Now(),
    )


def export_path(export: EvidenceExport) -> Path:
    return Path(settings.EVIDENCE_EXPORT_DIR) / export.filename
