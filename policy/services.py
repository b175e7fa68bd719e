"""Policy decisions: evaluate, fail closed, and log every answer.

`policy_decide` is what every decision point calls. It never raises and never allows on a
failure: an engine error or timeout is a deny with reason `policy_unavailable`; no answer,
or an answer of the wrong shape, is a deny with `policy_undefined`. The decision is
written in the caller's transaction, so it is kept exactly when the action it governed is.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from controlplane.canonical import digest
from controlplane.telemetry import span

from .bundles import PolicyBundle
from .decision_points import INPUT_VERSION, POINTS, RESULT_ACCEPTS
from .engines import UNDEFINED, EngineError, PolicyEngine, configured_engine
from .models import PolicyDecision

logger = logging.getLogger(__name__)
REDACTED = "[redacted]"


@dataclass(frozen=True)
class Decision:
    allow: bool
    require_approval: bool
    reasons: list[str]
    approvers: list[str] = field(default_factory=list)
    quorum: int | None = None
    obligations: dict = field(default_factory=dict)
    failure: str = ""
    latency_us: int = 0
    engine: str = ""
    decision_id: int | None = None

    def as_dict(self) -> dict:
        return {
            "allow": self.allow,
            "require_approval": self.require_approval,
            "reasons": self.reasons,
            "approvers": self.approvers,
            "quorum": self.quorum,
            "obligations": self.obligations,
            "failure": self.failure,
        }


def decision_input(point: str, **fields: Any) -> dict:
    """An input document for `point`, stamped with its point and version."""
    return {"decision_point": point, "version": INPUT_VERSION, **fields}


def policy_evaluate(
    point: str, document: dict, *, bundle: PolicyBundle, engine: PolicyEngine | None = None
) -> Decision:
    """Evaluate without recording anything (dry runs and impact analysis)."""
    engine = engine or configured_engine()
    with span(
        "policy.decide", {"policy.decision_point": point, "policy.bundle_digest": bundle.digest}
    ) as current:
        decision = _evaluate(point, document, bundle, engine)
        current.set_attributes(
            {
                "policy.engine": decision.engine,
                "policy.allow": decision.allow,
                "policy.require_approval": decision.require_approval,
                "policy.failure": decision.failure,
            }
        )
    return decision


def _evaluate(point: str, document: dict, bundle: PolicyBundle, engine: PolicyEngine) -> Decision:
    definition = POINTS[point]
    if not definition.accepts(document):
        problems = [error.message for error in definition.validator.iter_errors(document)]
        return _denied(
            PolicyDecision.Failure.INVALID_INPUT,
            f"input does not fit {point} v{INPUT_VERSION}: " + "; ".join(problems[:3]),
            engine.name,
            0,
        )
    try:
        engine.prepare(bundle)
    except EngineError as error:
        logger.warning("policy bundle %s unusable: %s", bundle.digest[:12], error)
        return _denied(PolicyDecision.Failure.UNAVAILABLE, f"engine error: {error}"[:500], engine.name, 0)
    started = time.perf_counter()
    try:
        result = engine.evaluate(bundle, definition.entrypoint, document)
    except EngineError as error:
        logger.warning("policy engine failed at %s with bundle %s: %s", point, bundle.digest[:12], error)
        return _denied(
            PolicyDecision.Failure.UNAVAILABLE,
            f"engine error: {error}"[:500],
            engine.name,
            _elapsed_us(started),
        )
    latency_us = _elapsed_us(started)
    if latency_us > settings.POLICY_TIMEOUT_MS * 1000:
        # The embedded engine cannot be interrupted mid-evaluation; a late answer is discarded.
        return _denied(
            PolicyDecision.Failure.UNAVAILABLE,
            f"timed out: {latency_us // 1000} ms > {settings.POLICY_TIMEOUT_MS} ms",
            engine.name,
            latency_us,
        )
    if result is UNDEFINED:
        return _denied(
            PolicyDecision.Failure.UNDEFINED, f"{definition.entrypoint} is undefined", engine.name, latency_us
        )
    if not RESULT_ACCEPTS(result):
        return _denied(
            PolicyDecision.Failure.UNDEFINED,
            f"{definition.entrypoint} gave a malformed result",
            engine.name,
            latency_us,
        )
    return Decision(
        allow=result["allow"],
        require_approval=result["require_approval"],
        reasons=list(result["reasons"]),
        approvers=list(result.get("approvers", [])),
        quorum=result.get("quorum"),
        obligations=result.get("obligations", {}),
        engine=engine.name,
        latency_us=latency_us,
    )


def policy_decide(
    point: str,
    document: dict,
    *,
    bundle: PolicyBundle,
    actor: Any = "",
    trace_id: str = "",
    run_id: Any = "",
    engine: PolicyEngine | None = None,
) -> Decision:
    """Evaluate and log the decision in the current transaction."""
    decision = policy_evaluate(point, document, bundle=bundle, engine=engine)
    return policy_record(
        point, document, decision, bundle=bundle, actor=actor, trace_id=trace_id, run_id=run_id
    )


def policy_record(
    point: str,
    document: dict,
    decision: Decision,
    *,
    bundle: PolicyBundle,
    actor: Any = "",
    trace_id: str = "",
    run_id: Any = "",
) -> Decision:
    """Log a decision evaluated earlier, inside the transaction of the action it governs."""
    row = PolicyDecision.objects.create(
        **decision_row(
            point, document, decision, bundle=bundle, actor=actor, trace_id=trace_id, run_id=run_id
        )
    )
    return Decision(**{**decision.__dict__, "decision_id": row.pk})


def decision_row(
    point: str,
    document: dict,
    decision: Decision,
    *,
    bundle: PolicyBundle,
    actor: Any = "",
    trace_id: str = "",
    run_id: Any = "",
) -> dict[str, Any]:
    """The log row of a decision, field by field: for writers that insert it with other rows."""
    return {
        "decision_point": point,
        "input_version": INPUT_VERSION,
        "input": redact(point, document),
        "input_digest": digest(document),
        "bundle_name": bundle.name,
        "bundle_version": bundle.version,
        "bundle_digest": bundle.digest,
        "engine": decision.engine,
        "allow": decision.allow,
        "require_approval": decision.require_approval,
        "approvers": decision.approvers,
        "quorum": decision.quorum,
        "reasons": decision.reasons,
        "obligations": decision.obligations,
        "failure": decision.failure,
        "latency_us": decision.latency_us,
        "actor": str(actor),
        "trace_id": trace_id,
        "run_id": str(run_id or ""),
    }


def redact(point: str, document: dict) -> dict:
    """A copy of `document` with the point's sensitive fields replaced by a marker."""

    def mark(parent: dict, key: str) -> None:
        parent[key] = REDACTED

    return _sensitive_fields_changed(point, document, mark)


def without_redacted(point: str, logged: dict) -> dict:
    """A logged input without the fields the log replaced by its marker: every such field is
    optional in its input, where the marker in its place would fail the input's schema."""

    def drop(parent: dict, key: str) -> None:
        if parent[key] == REDACTED:
            del parent[key]

    return _sensitive_fields_changed(point, logged, drop) if point in POINTS else logged


def _sensitive_fields_changed(point: str, document: dict, change: Callable[[dict, str], None]) -> dict:
    """A copy of `document` (shared where it is not changed) with `change(parent, key)` applied at
    each of the point's sensitive fields that it holds."""
    copied = dict(document)
    for path in POINTS[point].sensitive:
        parent = copied
        for key in path[:-1]:
            if not isinstance(parent.get(key), dict):
                break
            parent[key] = dict(parent[key])
            parent = parent[key]
        else:
            if path[-1] in parent:
                change(parent, path[-1])
    return copied


def _denied(failure: str, reason: str, engine: str, latency_us: int) -> Decision:
    return Decision(
        allow=False,
        require_approval=False,
        reasons=[f"{failure}: {reason}"],
        failure=failure,
        engine=engine,
        latency_us=latency_us,
    )


def _elapsed_us(started: float) -> int:
    return int((time.perf_counter() - started) * 1_000_000)
