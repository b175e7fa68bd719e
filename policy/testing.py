"""Run a bundle's Rego unit tests: every rule named `test_*`, as `opa test` does.

A test passes when its rule evaluates to true; false, undefined or an error fails it.
"""

import re
from dataclasses import dataclass

from regopy import Interpreter, RegoError

_PACKAGE = re.compile(r"^\s*package\s+([A-Za-z_][\w.]*)", re.MULTILINE)
_TEST_RULE = re.compile(r"^(test_\w+)\b", re.MULTILINE)


@dataclass(frozen=True)
class TestResult:
    name: str  # package.rule
    passed: bool
    detail: str = ""


def run_bundle_tests(modules: dict[str, str], data: dict | None = None) -> list[TestResult]:
    interpreter = Interpreter()
    try:
        for name, source in sorted(modules.items()):
            interpreter.add_module(name, source)
        interpreter.add_data(data or {})
    except RegoError as error:
        return [TestResult("(bundle)", False, f"does not compile: {error}")]
    results = []
    for source in modules.values():
        package = _PACKAGE.search(source)
        if not package:
            continue
        for rule in dict.fromkeys(_TEST_RULE.findall(source)):
            results.append(_run_one(interpreter, f"{package.group(1)}.{rule}"))
    return results


def _run_one(interpreter: Interpreter, path: str) -> TestResult:
    try:
        output = str(interpreter.query(f"data.{path}"))
    except RegoError as error:
        return TestResult(path, False, f"error: {error}")
    if output == '{"expressions":[true]}':
        return TestResult(path, True)
    return TestResult(path, False, "undefined" if output == "undefined" else f"got {output}")
