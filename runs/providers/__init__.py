"""The run engine's only door to models: one request in, one validated JSON reply out.

Adapters (`builtin`, `openai_compatible`) each expose `complete(request) -> ModelReply`;
this module picks one from the model config, guards it with a per-endpoint circuit breaker
and walks the fallback chain. Errors say whether retrying can help (`retryable`) and whether
they prove the endpoint unhealthy (`trips_circuit`), so the engine and the breaker decide
without knowing any provider.
"""

import itertools
import logging
import time
from dataclasses import dataclass, replace
from importlib import import_module

from controlplane.telemetry import span

from . import breaker

logger = logging.getLogger(__name__)

_PROVIDERS = frozenset({"builtin", "openai_compatible"})  # adapter modules: config text picks only these
_REPAIR_ECHO_CHARS = 4000


@dataclass(frozen=True)
class ModelRequest:
    config_name: str
    config: dict
    purpose: str
    prompt: str
    variables: dict
    output_schema: dict | None
    idempotency_key: str = ""


@dataclass(frozen=True)
class ModelReply:
    output: dict
    raw_text: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    provider: str
    model: str
    config_name: str
    latency_ms: float
    fallbacks: tuple[str, ...] = ()


class ProviderError(Exception):
    """The endpoint could not answer (unreachable, overloaded, too slow, circuit open)."""

    retryable = True
    trips_circuit = True

    def __init__(self, message: str, *, config_name: str = "") -> None:
        super().__init__(message)
        self.config_name = config_name


class MalformedOutput(ProviderError):
    """The endpoint answered, but not with JSON satisfying the output schema: worth a repair re-ask."""

    trips_circuit = False

    def __init__(self, *, problem: str, raw_text: str, config_name: str = "") -> None:
        super().__init__(f"malformed model output: {problem}", config_name=config_name)
        self.problem = problem
        self.raw_text = raw_text


class ProviderConfigError(ProviderError):
    """The call cannot work as configured (no API key, unknown model, bad schema): retrying won't help."""

    retryable = False
    trips_circuit = False


def estimate_tokens(text: str) -> int:
    """A stable stand-in for a tokenizer, for providers that report no usage."""
    return len(text) // 4


def cost_usd(config: dict, prompt_tokens: int, completion_tokens: int) -> float:
    price = config.get("price_per_1k_tokens") or {}
    cost = prompt_tokens / 1000 * price.get("input", 0) + completion_tokens / 1000 * price.get("output", 0)
    return round(cost, 8)


def complete(request: ModelRequest) -> ModelReply:
    """One call to the provider named by the config, through its endpoint's circuit breaker."""
    provider = request.config.get("provider")
    if provider not in _PROVIDERS:
        raise ProviderConfigError(f"unknown model provider {provider!r}", config_name=request.config_name)
    adapter = import_module(f"{__name__}.{provider}")
    started = time.perf_counter()
    attributes = {
        "model.provider": provider,
        "model.name": request.config.get("model"),
        "model.config": request.config_name,
    }
    with span("model.call", attributes) as current:
        try:
            reply = breaker.call(breaker.endpoint_key(request.config), lambda: adapter.complete(request))
        except breaker.CircuitOpen as exc:
            raise ProviderError(str(exc), config_name=request.config_name) from exc
        except ProviderError as exc:
            exc.config_name = exc.config_name or request.config_name
            raise
        current.set_attributes(
            {
                "model.prompt_tokens": reply.prompt_tokens,
                "model.completion_tokens": reply.completion_tokens,
                "outcome": "ok",
            }
        )
    return replace(reply, latency_ms=round((time.perf_counter() - started) * 1000, 3))


def complete_with_fallback(requests: list[ModelRequest]) -> ModelReply:
    """Try each config of the chain in order; a malformed reply stops here for the engine to repair."""
    if not requests:
        raise ProviderConfigError("no model config to call")
    failed: list[str] = []
    for request, following in itertools.pairwise(requests):
        try:
            return replace(complete(request), fallbacks=tuple(failed))
        except MalformedOutput:
            raise
        except ProviderError as exc:
            logger.warning(
                "model config %s failed (%s), falling back to %s",
                request.config_name,
                exc,
                following.config_name,
            )
            failed.append(request.config_name)
    return replace(complete(requests[-1]), fallbacks=tuple(failed))


def repair_request(request: ModelRequest, raw_text: str, problem: str) -> ModelRequest:
    """The same request, told what was wrong with its last reply and asked for the JSON only.

    The idempotency key changes so that a provider caching by key answers afresh.
    """
    prompt = (
        f"{request.prompt}\n\n"
        f"Your previous reply could not be used: {problem}\n"
        f"Previous reply:\n{raw_text[:_REPAIR_ECHO_CHARS]}\n\n"
        "Answer again with the corrected JSON object only: no prose, no code fences."
    )
    key = f"{request.idempotency_key}:repair" if request.idempotency_key else ""
    return replace(request, prompt=prompt, idempotency_key=key)
