"""Run a bundle's Rego unit tests: every rule named `test_*`, as `opa test` does.

A test passes when its rule evaluates to true; false, undefined or an error fails it. All
tests are compiled once, as entrypoints of one bundle, then evaluated one by one.
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
    tests = [
        f"{package.group(1)}.{rule}"
        for source in modules.values()
        if (package := _PACKAGE.search(source))
        for rule in dict.fromkeys(_TEST_RULE.findall(source))
    ]
    interpreter = Interpreter()
    try:
        for name, source in sorted(modules.items()):
            interpreter.add_module(name, source)
        interpreter.add_data(data or {})
        compiled = interpreter.build(None, [test.replace(".", "/") for test in tests]) if tests else None
    except RegoError as error:
        return [TestResult("(bundle)", False, f"does not compile: {error}")]
    return [_run_one(interpreter, compiled, test) for test in tests]


def _run_one(interpreter: Interpreter, compiled, test: str) -> TestResult:
    try:
        output = interpreter.query_bundle_entrypoint(compiled, test.replace(".", "/"))
    except (RegoError, ValueError) as error:
        return TestResult(test, False, f"error: {error}")
    if not output.ok():
        return TestResult(test, False, f"error: {str(output)[:300]}")
    expressions = output.results[0].expressions if output.results else []
    if expressions == [True]:
        return TestResult(test, True)
    return TestResult(test, False, f"got {expressions[0]!r}" if expressions else "undefined")
