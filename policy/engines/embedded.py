"""The embedded engine: Microsoft's rego-cpp through regopy, in process.

Each bundle is compiled once per digest (per thread: an interpreter is not shared between
threads) and evaluated through its compiled entrypoints, which is about ten times faster
than a string query. Each entrypoint gets a build of its own holding only the modules it can
reach: rego-cpp verifies the whole build and sizes its evaluation frame to all of its rules
on every query, so the other decision points' rules would cost every decision about a fifth
of its time.

A decision's input goes to rego-cpp through its C API directly, one call per JSON value, and
its output is read once: regopy's `Input` and `Output` wrappers do the same work at twice the
cost (an isinstance ladder and a wrapper call per value; the output string fetched twice).
Object members go in key order: rego-cpp keeps them in the order given and iterates them in
that order, so a rule that collects an object's keys or values would otherwise depend on the
order the caller built the dict in (OPA sorts them). rego-cpp also finds a member by a scan
in that order, in which the default bundle's reads come sooner (about 20 µs less per
tool.call decision).
"""

import json
import math
import re
import threading
from collections import OrderedDict
from typing import Any

from regopy import Interpreter, RegoError
from regopy.rego_shared import rego as rego_c
from regopy.rego_shared import rego_bundle_query_entrypoint, rego_output_string, rego_set_input

from ..bundles import PolicyBundle
from ..decision_points import POINTS
from . import UNDEFINED, EngineError, refuse_outside_reaching_calls

ENTRYPOINTS = [point.entrypoint for point in POINTS.values()]
_CACHE_SIZE = 16
_PACKAGE = re.compile(r"^\s*package\s+([\w.]+)", re.MULTILINE)
# Comments and strings are matched only to be skipped; a `data` reference has its path captured.
_DATA_REFERENCE = re.compile(r'#[^\n]*|"(?:\\.|[^"\\])*"|`[^`]*`|\bdata\b((?:\.[A-Za-z_]\w*)*)')
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

_new_input, _free_input = rego_c.regoNewInput, rego_c.regoFreeInput
_push_string, _push_int, _push_float = rego_c.regoInputString, rego_c.regoInputInt, rego_c.regoInputFloat
_push_boolean, _push_null = rego_c.regoInputBoolean, rego_c.regoInputNull
_push_item, _push_object = rego_c.regoInputObjectItem, rego_c.regoInputObject
_push_array = rego_c.regoInputArray
_output_ok, _free_output = rego_c.regoOutputOk, rego_c.regoFreeOutput


class EmbeddedEngine:
    name = "embedded"

    def __init__(self) -> None:
        self._local = threading.local()

    def prepare(self, bundle: PolicyBundle) -> None:
        self.compile(bundle)

    def evaluate(self, bundle: PolicyBundle, entrypoint: str, document: dict) -> Any:
        builds = self.compile(bundle)
        if entrypoint not in builds:
            raise EngineError(f"bundle {bundle.name} has no entrypoint {entrypoint}")
        interpreter, compiled = builds[entrypoint]
        handle = _new_input()
        try:
            _push(handle, document)
            rego_set_input(interpreter._impl, handle)
            output = rego_bundle_query_entrypoint(interpreter._impl, compiled._impl, entrypoint)
        except (RegoError, ValueError) as error:
            raise EngineError(f"evaluation failed: {error}") from error
        finally:
            _free_input(handle)
        try:
            ok, text = _output_ok(output), rego_output_string(output)
        except RegoError as error:
            raise EngineError(f"evaluation failed: {error}") from error
        finally:
            _free_output(output)
        if not ok:
            raise EngineError(f"evaluation failed: {text[:500]}")
        return _expression(text)

    def compiled_count(self) -> int:
        """How many bundles this thread holds compiled (for tests of the cache)."""
        return len(self._cache())

    def _cache(self) -> OrderedDict:
        if not hasattr(self._local, "cache"):
            self._local.cache = OrderedDict()
        return self._local.cache

    def compile(self, bundle: PolicyBundle) -> dict[str, tuple[Interpreter, Any]]:
        """The bundle's build for each entrypoint (from this thread's cache); raises EngineError if
        the bundle does not compile, whole: a module no entrypoint reaches must compile too."""
        cache = self._cache()
        if bundle.digest in cache:
            cache.move_to_end(bundle.digest)
            return cache[bundle.digest]
        refuse_outside_reaching_calls(bundle)
        # Test modules are for `policy_test`; leaving them out halves the decision time.
        modules = {name: source for name, source in bundle.modules.items() if not name.endswith("_test.rego")}
        _build(bundle, modules, ENTRYPOINTS)
        cache[bundle.digest] = {
            entrypoint: _build(bundle, reachable_modules(modules, entrypoint), [entrypoint])
            for entrypoint in ENTRYPOINTS
        }
        if len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)
        return cache[bundle.digest]


def _build(bundle: PolicyBundle, modules: dict[str, str], entrypoints: list[str]) -> tuple[Interpreter, Any]:
    interpreter = Interpreter()
    try:
        for name, source in sorted(modules.items()):
            interpreter.add_module(name, source)
        interpreter.add_data(bundle.data)
        compiled = interpreter.build(None, entrypoints)
    except RegoError as error:
        raise EngineError(f"bundle {bundle.name} does not compile: {error}") from error
    if not compiled.ok():
        raise EngineError(f"bundle {bundle.name} does not compile")
    return interpreter, compiled


def reachable_modules(modules: dict[str, str], entrypoint: str) -> dict[str, str]:
    """The modules `entrypoint` can reach: those of its package, then, transitively, those of
    every package their `data.` references (imports included) overlap. A reference that names
    no path (`data` alone, `data[key]`) reaches every module: leaving out a module that holds a
    deny rule would turn a deny into an allow, so any doubt keeps the module in."""
    packages = {
        name: match.group(1) if (match := _PACKAGE.search(source)) else "" for name, source in modules.items()
    }
    wanted, reached = [entrypoint.replace("/", ".")], set()
    while wanted:
        path = wanted.pop()
        for name, package in packages.items():
            if name not in reached and _overlap(path, package):
                reached.add(name)
                references = [
                    match.group(1)
                    for match in _DATA_REFERENCE.finditer(modules[name])
                    if match.group(0).startswith("data")
                ]
                if any(reference == "" for reference in references):
                    return modules
                wanted += [reference[1:] for reference in references]
    return {name: modules[name] for name in sorted(reached)}


def _overlap(path: str, package: str) -> bool:
    """Whether a reference to `path` can read rules of `package` (one is within the other)."""
    return path == package or path.startswith(f"{package}.") or package.startswith(f"{path}.")


def _push(handle: int, value: Any) -> None:
    """Build `value` on rego-cpp's input stack: children first, then their container."""
    if isinstance(value, str):
        if "\x00" in value:  # C would end the string there, silently
            raise ValueError("a string holds a NUL character")
        failed = _push_string(handle, value.encode())
    elif isinstance(value, dict):
        try:
            members = sorted(value.items())
        except TypeError:  # keys of different types have no order (and JSON has none of them)
            members = value.items()
        for key, item in members:
            _push(handle, key)
            _push(handle, item)
            if _push_item(handle):
                raise ValueError("rego-cpp refused an object item")
        failed = _push_object(handle, len(value))
    elif isinstance(value, bool):  # before int: a bool is an int to Python
        failed = _push_boolean(handle, value)
    elif isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:  # ctypes would wrap it around, silently
            raise ValueError(f"integer {value} does not fit in 64 bits")
        failed = _push_int(handle, value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a JSON number")
        failed = _push_float(handle, value)
    elif value is None:
        failed = _push_null(handle)
    elif isinstance(value, list | tuple):
        for item in value:
            _push(handle, item)
        failed = _push_array(handle, len(value))
    else:
        raise ValueError(f"cannot give a {type(value).__name__} to rego-cpp")
    if failed:
        raise ValueError(f"rego-cpp refused a {type(value).__name__}")


def _expression(text: str) -> Any:
    """The value of the entrypoint from rego-cpp's JSON output, or UNDEFINED."""
    if text == "undefined":
        return UNDEFINED
    try:
        output = json.loads(text)
    except ValueError as error:
        raise EngineError(f"the engine's output is not JSON: {text[:200]}") from error
    first = output[0] if isinstance(output, list) and output else output
    expressions = first.get("expressions") if isinstance(first, dict) else None
    return expressions[0] if expressions else UNDEFINED
