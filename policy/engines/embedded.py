"""The embedded engine: Microsoft's rego-cpp through regopy, in process.

Each bundle is compiled once per digest (per thread: an interpreter is not shared between
threads) and evaluated through its compiled entrypoints, which is about ten times faster
than a string query.
"""

import threading
from collections import OrderedDict
from typing import Any

from regopy import Input, Interpreter, RegoError

from ..bundles import PolicyBundle
from ..decision_points import POINTS
from . import UNDEFINED, EngineError

ENTRYPOINTS = [point.entrypoint for point in POINTS.values()]
_CACHE_SIZE = 16


class EmbeddedEngine:
    name = "embedded"

    def __init__(self) -> None:
        self._local = threading.local()

    def prepare(self, bundle: PolicyBundle) -> None:
        self.compile(bundle)

    def evaluate(self, bundle: PolicyBundle, entrypoint: str, document: dict) -> Any:
        interpreter, compiled = self.compile(bundle)
        try:
            interpreter.set_input(Input(document))
            output = interpreter.query_bundle_entrypoint(compiled, entrypoint)
        except (RegoError, ValueError) as error:  # ValueError: the engine's output was not JSON
            raise EngineError(f"evaluation failed: {error}") from error
        if not output.ok():
            raise EngineError(f"evaluation failed: {str(output)[:500]}")
        expressions = output.results[0].expressions if output.results else []
        return expressions[0] if expressions else UNDEFINED

    def compiled_count(self) -> int:
        """How many bundles this thread holds compiled (for tests of the cache)."""
        return len(self._cache())

    def _cache(self) -> OrderedDict:
        if not hasattr(self._local, "cache"):
            self._local.cache = OrderedDict()
        return self._local.cache

    def compile(self, bundle: PolicyBundle) -> tuple[Interpreter, Any]:
        """The compiled bundle (from this thread's cache); raises EngineError if it does not compile."""
        cache = self._cache()
        if bundle.digest in cache:
            cache.move_to_end(bundle.digest)
            return cache[bundle.digest]
        interpreter = Interpreter()
        try:
            # Test modules are for `policy_test`; leaving them out halves the decision time.
            for name, source in sorted(bundle.modules.items()):
                if not name.endswith("_test.rego"):
                    interpreter.add_module(name, source)
            interpreter.add_data(bundle.data)
            compiled = interpreter.build(None, ENTRYPOINTS)
        except RegoError as error:
            raise EngineError(f"bundle {bundle.name} does not compile: {error}") from error
        if not compiled.ok():
            raise EngineError(f"bundle {bundle.name} does not compile")
        cache[bundle.digest] = (interpreter, compiled)
        if len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)
        return cache[bundle.digest]
