"""The `sandbox` transport: the built-in system of record, called in process on this database.

Its writes commit in their own transaction, or in the caller's when the caller holds one
open: then the effect commits, or rolls back, with the caller's work.
"""

from django.db import DatabaseError

from sandbox import operations
from sandbox.models import Effect

from . import ToolCall, ToolOutcomeUnknown, ToolRejected, ToolResult, ToolUnavailable


def invoke(call: ToolCall) -> ToolResult:
    operation = call.spec["transport"].get("operation", "")
    try:
        outcome = operations.perform(operation, call.args, idempotency_key=call.idempotency_key)
    except operations.OperationError as error:
        raise ToolRejected(f"{call.tool}: {error}") from error
    except operations.Unavailable as error:  # refused before doing anything: safe to call again
        raise ToolUnavailable(f"{call.tool}: {error}") from error
    except DatabaseError as error:
        # The connection may have failed while the write was committing.
        raise ToolOutcomeUnknown(f"{call.tool}: {error}") from error
    return ToolResult(outcome.result, outcome.effect_id, outcome.replayed)


def reconcile(call: ToolCall, lookup_spec: dict | None) -> ToolResult | None:
    """Read the idempotency table, which records every write: the lookup tool is not needed."""
    try:
        effect = Effect.objects.filter(
            idempotency_key=call.idempotency_key, operation=call.spec["transport"].get("operation", "")
        ).first()
    except DatabaseError as error:
        raise ToolUnavailable(f"{call.tool}: could not look up the effect: {error}") from error
    return None if effect is None else ToolResult(effect.result, effect.effect_id, replayed=True)
