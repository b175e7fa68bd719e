"""The sandbox's operations, under the names a tool's `transport.operation` gives.

Reads take the call's arguments and return a result. Writes also take the call's
idempotency key and happen at most once per key: each runs in one transaction that first
inserts the key's row in the Effect table, before touching anything else. A key used before
fails that insert: the transaction rolls back and the stored reply is replayed. When
duplicates race, the unique key makes all but the first wait for its commit and then fail to
insert, so there is one effect however many calls arrive.

During a simulated `Outage` a call is refused before any of that, as `Unavailable`: nothing
happened, and the same call with the same key is served once the outage has refused enough.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from django.db import IntegrityError, OperationalError, transaction

from .models import (
    CatalogEntry,
    DatasetBatch,
    Effect,
    KnowledgeArticle,
    Outage,
    Refund,
    RefusedCall,
    SupportCase,
)

DEFAULT_MAX_RESULTS = 5
_WORD = re.compile(r"[a-z0-9]+")
# Words too common to say what a query is about; words under three letters are skipped too.
_STOPWORDS = frozenset(
    _WORD.findall("all and any are can for from has have how not our the this that was what with you your")
)
_CENTS = Decimal("0.01")

# Applies one write inside its Effect's transaction; returns the reply and the effect id.
Write = Callable[[dict, Effect], tuple[dict, str]]


class OperationError(Exception):
    """The system refused the call (bad arguments, unknown case, key reused); nothing changed."""


class Unavailable(OperationalError):
    """The system is down for this call (an `Outage`); nothing changed, and calling again may work.

    The `sandbox` tool transport reports it as `ToolUnavailable`: retry, nothing to reconcile.
    """


@dataclass(frozen=True)
class Outcome:
    result: dict
    effect_id: str = ""
    replayed: bool = False


def perform(operation: str, args: dict, *, idempotency_key: str) -> Outcome:
    """Run one operation by name: what the `sandbox` tool transport calls."""
    if operation not in _READS and operation not in _WRITES:
        raise OperationError(f"unknown operation {operation!r}")
    _refuse_during_outage(operation, args, idempotency_key)
    if operation in _READS:
        return Outcome(_READS[operation](args))
    return _WRITES[operation](args, idempotency_key=idempotency_key)


def kb_search(args: dict) -> dict:
    """Articles sharing the most words with the query (a query word matches a word it starts)."""
    words = {word for word in _WORD.findall(str(_arg(args, "query")).lower()) if len(word) > 2} - _STOPWORDS
    limit = args.get("max_results", DEFAULT_MAX_RESULTS)
    if not isinstance(limit, int) or limit < 0:
        raise OperationError(f"max_results must be a whole number >= 0, not {limit!r}")
    scored = []
    for article in KnowledgeArticle.objects.all():
        text = set(_WORD.findall(f"{article.title} {article.body} {' '.join(article.tags)}".lower()))
        score = sum(any(token.startswith(word) for token in text) for word in words)
        if score:
            scored.append((score, article))
    scored.sort(key=lambda hit: (-hit[0], hit[1].slug))
    hits = [
        {"slug": article.slug, "title": article.title, "body": article.body, "score": score}
        for score, article in scored[:limit]
    ]
    return {"hits": hits}


def get_case(args: dict) -> dict:
    """The case as it is now: the reconcile lookup of `update_case` in the demo bundle."""
    case_id = _arg(args, "case_id")
    case = SupportCase.objects.filter(case_id=case_id).first()
    if case is None:
        raise OperationError(f"no case {case_id!r}")
    return _case_view(case)


def update_case(args: dict, *, idempotency_key: str) -> Outcome:
    """Resolve a case with a reply and, given `refund_amount` > 0, issue a refund."""
    return _once("update_case", args, idempotency_key, _resolve)


def reopen_case(args: dict, *, idempotency_key: str) -> Outcome:
    """Reopen a case and reverse the refunds issued by `original_effect_id`, if given."""
    return _once("reopen_case", args, idempotency_key, _reopen)


def profile_batch(args: dict) -> dict:
    """A batch's profile beside what its producer promised: row count, observed column types,
    nulls per column, negative amounts; the lineage the warehouse knows."""
    batch = _batch(args)
    dataset, rows = batch.dataset, batch.rows
    columns: dict[str, str] = {}
    nulls: dict[str, int] = {}
    for row in rows:
        for name, value in row.items():
            if value is None:
                nulls[name] = nulls.get(name, 0) + 1
            else:
                columns.setdefault(name, _type_name(value))
    amounts = [row["amount"] for row in rows if isinstance(row.get("amount"), int | float)]
    return {
        "dataset": dataset.slug,
        "batch_id": batch.batch_id,
        "owner": dataset.owner,
        "source": dataset.source,
        "upstream": dataset.upstream,
        "row_count": len(rows),
        "baseline_rows": dataset.baseline_rows,
        "columns": columns,
        "expected_columns": dataset.expected_columns,
        "null_counts": nulls,
        "negative_amounts": sum(1 for amount in amounts if amount < 0),
    }


def get_catalog_entry(args: dict) -> dict:
    """The batch's published metadata, if any: the reconcile lookup of `publish_metadata`."""
    entry = _batch(args).catalog_entries.filter(status=CatalogEntry.Status.PUBLISHED).last()
    return {"published": entry is not None, **(_entry_view(entry) if entry else {})}


def publish_metadata(args: dict, *, idempotency_key: str) -> Outcome:
    """Publish a batch's review (severity, report, lineage, tags) to the data catalog."""
    return _once("publish_metadata", args, idempotency_key, _publish)


def retract_metadata(args: dict, *, idempotency_key: str) -> Outcome:
    """Retract what `original_effect_id` published; undoes `publish_metadata`."""
    return _once("retract_metadata", args, idempotency_key, _retract)


_READS: dict[str, Callable[[dict], dict]] = {
    "kb_search": kb_search,
    "get_case": get_case,
    "profile_batch": profile_batch,
    "get_catalog_entry": get_catalog_entry,
}
_WRITES: dict[str, Callable[..., Outcome]] = {
    "update_case": update_case,
    "reopen_case": reopen_case,
    "publish_metadata": publish_metadata,
    "retract_metadata": retract_metadata,
}


def _refuse_during_outage(operation: str, args: dict, idempotency_key: str) -> None:
    subject = _subject(args)
    if not Outage.objects.filter(operation=operation, subject=subject).exists():
        return
    with transaction.atomic():
        # The outage's row lock makes concurrent attempts count one after another.
        outage = Outage.objects.select_for_update().filter(operation=operation, subject=subject).first()
        if outage is None:
            return
        refused, _ = RefusedCall.objects.get_or_create(outage=outage, idempotency_key=idempotency_key)
        if refused.attempts >= outage.refusals:
            return
        refused.attempts += 1
        refused.save(update_fields=["attempts"])
    raise Unavailable(
        f"{operation} is unavailable for {subject}: an outage refused this call "
        f"({refused.attempts} of the {outage.refusals} attempts it refuses)"
    )


def _subject(args: dict) -> str:
    """The record a call is about, as an `Outage` names it."""
    if "case_id" in args:
        return str(args["case_id"])
    return f"{args.get('dataset', '')}/{args.get('batch_id', '')}"


def _once(operation: str, args: dict, idempotency_key: str, write: Write) -> Outcome:
    if not idempotency_key:
        raise OperationError(f"{operation} is a write and needs an idempotency key")
    try:
        with transaction.atomic():
            effect = Effect.objects.create(idempotency_key=idempotency_key, operation=operation, args=args)
            effect.result, effect.effect_id = write(args, effect)
            effect.save(update_fields=["result", "effect_id"])
            return Outcome(effect.result, effect.effect_id)
    except IntegrityError:
        # The key's row exists: written before, or by a concurrent call whose commit this
        # INSERT waited for. Either way its reply is visible now.
        effect = Effect.objects.filter(idempotency_key=idempotency_key).first()
        if effect is None:  # some other constraint refused the write
            raise
    if (effect.operation, effect.args) != (operation, args):
        raise OperationError(f"idempotency key {idempotency_key!r} was already used for another call")
    return Outcome(effect.result, effect.effect_id, replayed=True)


def _resolve(args: dict, effect: Effect) -> tuple[dict, str]:
    case = _case_for_update(args)
    amount = _money(args.get("refund_amount", 0))
    case.status = SupportCase.Status.RESOLVED
    case.resolution = str(_arg(args, "resolution"))
    if amount:
        Refund.objects.create(case=case, effect=effect, amount=amount)
        case.refund_total += amount
    case.save()
    return _case_view(case) | {"refund_issued": str(amount)}, f"case-update:{effect.pk}"


def _reopen(args: dict, effect: Effect) -> tuple[dict, str]:
    case = _case_for_update(args)
    reversed_amounts = []
    if original_id := args.get("original_effect_id"):
        original = Effect.objects.select_for_update().filter(effect_id=original_id).first()
        if original is None or original.args.get("case_id") != case.case_id:
            raise OperationError(f"no effect {original_id!r} on case {case.case_id}")
        for refund in original.refunds.select_for_update().filter(status=Refund.Status.ISSUED):
            refund.status = Refund.Status.REVERSED
            refund.save(update_fields=["status"])
            case.refund_total -= refund.amount
            reversed_amounts.append(str(refund.amount))
        if not original.compensated_by_key:
            original.compensated_by_key = effect.idempotency_key
            original.save(update_fields=["compensated_by_key"])
    case.status = SupportCase.Status.REOPENED
    case.save()
    return _case_view(case) | {"refunds_reversed": reversed_amounts}, f"case-reopen:{effect.pk}"


def _publish(args: dict, effect: Effect) -> tuple[dict, str]:
    severity = str(_arg(args, "severity"))
    if severity not in ("low", "medium", "high"):
        raise OperationError(f"severity must be low, medium or high, not {severity!r}")
    entry = CatalogEntry.objects.create(
        batch=_batch(args),
        effect=effect,
        severity=severity,
        report=str(_arg(args, "report")),
        lineage=args.get("lineage") or {},
        tags=list(args.get("tags") or []),
    )
    return _entry_view(entry), f"catalog-entry:{entry.pk}"


def _retract(args: dict, effect: Effect) -> tuple[dict, str]:
    original_id = _arg(args, "original_effect_id")
    entry = CatalogEntry.objects.select_for_update().filter(effect__effect_id=original_id).first()
    if entry is None:
        raise OperationError(f"no catalog entry published by {original_id!r}")
    entry.status = CatalogEntry.Status.RETRACTED
    entry.save(update_fields=["status"])
    Effect.objects.filter(pk=entry.effect_id, compensated_by_key="").update(
        compensated_by_key=effect.idempotency_key
    )
    return _entry_view(entry), f"catalog-retraction:{effect.pk}"


def _batch(args: dict) -> DatasetBatch:
    dataset, batch_id = _arg(args, "dataset"), _arg(args, "batch_id")
    batch = (
        DatasetBatch.objects.select_related("dataset")
        .filter(dataset__slug=dataset, batch_id=batch_id)
        .first()
    )
    if batch is None:
        raise OperationError(f"no batch {batch_id!r} of dataset {dataset!r}")
    return batch


def _entry_view(entry: CatalogEntry) -> dict:
    return {
        "dataset": entry.batch.dataset.slug,
        "batch_id": entry.batch.batch_id,
        "status": entry.status,
        "severity": entry.severity,
        "report": entry.report,
        "lineage": entry.lineage,
        "tags": entry.tags,
    }


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "string" if isinstance(value, str) else type(value).__name__


def _case_for_update(args: dict) -> SupportCase:
    case_id = _arg(args, "case_id")
    case = SupportCase.objects.select_for_update().filter(case_id=case_id).first()
    if case is None:
        raise OperationError(f"no case {case_id!r}")
    return case


def _case_view(case: SupportCase) -> dict:
    return {
        "case_id": case.case_id,
        "customer": case.customer,
        "subject": case.subject,
        "status": case.status,
        "resolution": case.resolution,
        "refund_total": str(case.refund_total),
        "refunds": [{"amount": str(r.amount), "status": r.status} for r in case.refunds.order_by("pk")],
    }


def _arg(args: dict, name: str) -> object:
    if name not in args:
        raise OperationError(f"missing argument {name!r}")
    return args[name]


def _money(value: object) -> Decimal:
    try:
        amount = Decimal(str(value)).quantize(_CENTS)
    except InvalidOperation:
        raise OperationError(f"not an amount: {value!r}") from None
    if not amount.is_finite():
        raise OperationError(f"not an amount: {value!r}")
    if amount < 0:
        raise OperationError("a refund cannot be negative")
    return amount
