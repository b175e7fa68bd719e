"""One circuit breaker per model endpoint, so a dead endpoint fails fast instead of holding workers.

State lives in Redis when REDIS_URL is set, so every worker process sees the same circuit;
otherwise in this process. Only exceptions whose `trips_circuit` is true count as failures:
a malformed reply or a refused config proves the endpoint is up. pybreaker holds a lock
around each call, so calls to one endpoint run one at a time per process: right for the
prefork worker pool, a bottleneck for a threaded one.
"""

import functools
import logging
import threading
from collections.abc import Callable
from typing import TypeVar

import pybreaker
import redis
from django.conf import settings

logger = logging.getLogger(__name__)

T = TypeVar("T")

_breakers: dict[str, pybreaker.CircuitBreaker] = {}
_breakers_lock = threading.Lock()


class CircuitOpen(Exception):
    """Raised without calling the endpoint, while its circuit is open."""


def endpoint_key(config: dict) -> str:
    return f"{config.get('provider', '')}|{config.get('base_url', '')}|{config.get('model', '')}"


def call(key: str, func: Callable[[], T]) -> T:
    """`func()` if the circuit of `key` lets it through; its failures count towards opening it."""
    try:
        return _breaker(key).call(func)
    except pybreaker.CircuitBreakerError as exc:
        raise CircuitOpen(f"circuit open for model endpoint {key}: not calling it") from exc


def circuit_state(endpoint_key: str) -> str:
    """'closed', 'open' or 'half-open', as every process sharing the storage sees it."""
    return _breaker(endpoint_key).current_state


def shared_circuit_states() -> dict[str, str]:
    """The state of every endpoint's circuit kept in Redis (none without Redis, or when it is down)."""
    url = getattr(settings, "REDIS_URL", "")
    if not url:
        return {}
    prefix, suffix = "baton:model-circuit:", ":pybreaker:state"
    try:
        client = _redis(url)
        return {
            key.decode().removeprefix(prefix).removesuffix(suffix): (client.get(key) or b"").decode()
            for key in client.scan_iter(f"{prefix}*{suffix}", count=100)
        }
    except redis.RedisError:
        return {}


class _Observer(pybreaker.CircuitBreakerListener):
    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        if new_state.name == pybreaker.STATE_OPEN:
            logger.warning("circuit opened for model endpoint %s", cb.name)
        elif old_state is not None and new_state.name == pybreaker.STATE_CLOSED:
            logger.info("circuit closed again for model endpoint %s", cb.name)


def _not_an_outage(exc: BaseException) -> bool:
    return not getattr(exc, "trips_circuit", True)


def _breaker(key: str) -> pybreaker.CircuitBreaker:
    with _breakers_lock:
        breaker = _breakers.get(key)
        if breaker is None:
            breaker = _breakers[key] = pybreaker.CircuitBreaker(
                state_storage=_storage(key),
                name=key,
                exclude=[_not_an_outage],
                listeners=[_Observer()],
                throw_new_error_on_trip=False,  # the failure that trips the circuit is the better message
            )
    # Read on every call so that a settings change applies without restarting workers.
    breaker.fail_max = int(getattr(settings, "MODEL_CIRCUIT_FAILURES", 5))
    breaker.reset_timeout = float(getattr(settings, "MODEL_CIRCUIT_RESET_SECONDS", 30))
    return breaker


def _storage(key: str) -> pybreaker.CircuitBreakerStorage:
    url = getattr(settings, "REDIS_URL", "")
    if url:
        try:
            return pybreaker.CircuitRedisStorage(
                pybreaker.STATE_CLOSED, _redis(url), namespace=f"baton:model-circuit:{key}"
            )
        except redis.RedisError:
            logger.warning("Redis unreachable: the circuit of %s is kept in this process only", key)
    return pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)


@functools.cache
def _redis(url: str) -> redis.Redis:
    # Short timeouts: a slow Redis must not make every model call slow.
    return redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
