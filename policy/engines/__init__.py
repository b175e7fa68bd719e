"""Policy engines behind one narrow interface: evaluate(bundle, entrypoint, input) -> result.

An engine returns the value of the entrypoint's rule, `UNDEFINED` when the rule has no
value, or raises `EngineError`. Deciding what a failure means (always a deny) is the
service's job, not the engine's.
"""

from functools import lru_cache
from typing import Any, Protocol

from django.conf import settings

from ..bundles import PolicyBundle, outside_reaching_calls


class EngineError(Exception):
    """The engine could not give an answer (compile error, crash, unreachable server)."""


def refuse_outside_reaching_calls(bundle: PolicyBundle) -> None:
    """Raise EngineError (a deny wherever it is met) for a bundle calling out of the decision."""
    calls = outside_reaching_calls(bundle)
    if calls:
        raise EngineError(
            f"bundle {bundle.name} calls built-ins that reach outside the decision: {', '.join(calls)}"
        )


class _Undefined:
    def __repr__(self) -> str:
        return "UNDEFINED"


UNDEFINED = _Undefined()


class PolicyEngine(Protocol):
    name: str

    def prepare(self, bundle: PolicyBundle) -> None:
        """Make the bundle ready (compile it, push it): a one-off cost, not part of a decision's time."""

    def evaluate(self, bundle: PolicyBundle, entrypoint: str, document: dict) -> Any: ...


@lru_cache(maxsize=1)
def configured_engine() -> PolicyEngine:
    """The OPA server when OPA_URL is set, else the embedded engine (one per process)."""
    if settings.OPA_URL:
        from .opa import OpaServerEngine

        return OpaServerEngine(
            settings.OPA_URL, token=settings.OPA_TOKEN, timeout_s=settings.POLICY_TIMEOUT_MS / 1000
        )
    from .embedded import EmbeddedEngine

    return EmbeddedEngine()
