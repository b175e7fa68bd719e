"""Turning what a model actually wrote into the dict the workflow asked for.

Models wrap JSON in code fences and prose, write Python spellings (single quotes, True/None)
and leave trailing commas. A small tolerant parser accepts those without ever evaluating the
text; the output schema then decides whether the answer is usable.
"""

import functools
import json
import math
from typing import Any

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import SchemaError, best_match
from jsonschema.protocols import Validator

from registry.artifact_kinds import json_path

from . import MalformedOutput, ProviderConfigError

_FENCE = "```"
_LITERALS = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}
_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_VALUE_START = ("{", "[", ",", ":")  # a quote after one of these opens a string, elsewhere it is prose
_MAX_DEPTH = 64
_MAX_PROBLEM_CHARS = 500


def parse_reply(text: str, schema: dict | None) -> dict:
    """The first top-level JSON object in `text`, checked against `schema`."""
    if not isinstance(text, str) or not text.strip():
        raise MalformedOutput(problem="the reply is empty", raw_text=text if isinstance(text, str) else "")
    problem = None
    for region in (*_fenced_blocks(text), text):
        value, region_problem = _first_object(region)
        if value is not None:
            break
        problem = problem or region_problem
    else:
        raise MalformedOutput(problem=problem or "the reply contains no JSON object", raw_text=text)
    if schema is not None and (schema_error := schema_problem(value, schema)):
        raise MalformedOutput(problem=schema_error, raw_text=text)
    return value


def schema_problem(value: Any, schema: dict) -> str | None:
    """The most relevant way `value` breaks `schema`, with its JSON path, or None."""
    error = best_match(_validator(json.dumps(schema, sort_keys=True)).iter_errors(value))
    if error is None:
        return None
    return f"{json_path(error.absolute_path)}: {error.message}"[:_MAX_PROBLEM_CHARS]


@functools.lru_cache(maxsize=256)
def _validator(schema_json: str) -> Validator:
    schema = json.loads(schema_json)
    cls = validators.validator_for(schema, default=Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        raise ProviderConfigError(f"the output schema is not a valid JSON Schema: {exc.message}") from exc
    return cls(schema)


def _fenced_blocks(text: str) -> list[str]:
    """Contents of ``` blocks (language tag dropped): where a model puts the answer it means."""
    parts = text.split(_FENCE)
    blocks = parts[1:-1:2]  # an unclosed last fence yields no block; the whole text is searched anyway
    return [block.split("\n", 1)[1] if "\n" in block else block for block in blocks]


def _first_object(text: str) -> tuple[dict | None, str | None]:
    """Scan for `{` or `[` outside strings; objects nested in an array are not top-level."""
    problem = None
    pos = 0
    while (start := _next_bracket(text, pos)) >= 0:
        end = _balanced_end(text, start)
        if end is None:  # whatever follows is inside an unfinished value
            return None, problem or "the JSON is incomplete or its brackets do not match (truncated reply?)"
        try:
            value = _Parser(text[start:end]).document()
        except _SyntaxProblem as exc:
            problem = problem or f"not valid JSON: {exc}"
        else:
            if isinstance(value, dict):
                return value, None
            problem = problem or "the reply is a JSON array, an object is required"
        pos = end
    return None, problem


def _next_bracket(text: str, pos: int) -> int:
    candidates = [i for i in (text.find("{", pos), text.find("[", pos)) if i >= 0]
    return min(candidates, default=-1)


def _balanced_end(text: str, start: int) -> int | None:
    """Index just past the bracket closing `text[start]`, skipping over strings."""
    closers: list[str] = []
    previous = ""
    i = start
    while i < len(text):
        char = text[i]
        if char == '"' or (char == "'" and previous in _VALUE_START):
            i = _string_end(text, i)
            if i < 0:
                return None
        elif char in "{[":
            closers.append("}" if char == "{" else "]")
        elif char in "}]":
            if closers.pop() != char:
                return None
            if not closers:
                return i + 1
        if not char.isspace():
            previous = char
        i += 1
    return None


def _string_end(text: str, start: int) -> int:
    quote = text[start]
    i = start + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == quote:
            return i
        i += 1
    return -1


class _SyntaxProblem(ValueError):
    pass


class _Parser:
    """JSON, plus single quotes, bare keys, Python literals and trailing commas. Builds values only."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def document(self) -> Any:
        value = self.value(0)
        self.skip_space()
        if self.pos != len(self.text):
            raise self.problem("unexpected text after the value")
        return value

    def problem(self, message: str) -> _SyntaxProblem:
        return _SyntaxProblem(f"{message} at character {self.pos}")

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def value(self, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise self.problem("nested too deeply")
        self.skip_space()
        char = self.peek()
        if not char:
            raise self.problem("unexpected end")
        if char == "{":
            return self.container(depth, "}", self.member)
        if char == "[":
            return self.container(depth, "]", self.value)
        if char in "\"'":
            return self.string()
        if char == "-" or char.isdigit():
            return self.number()
        word = self.word()
        if word not in _LITERALS:
            raise self.problem(f"unexpected {word or char!r}")
        return _LITERALS[word]

    def container(self, depth: int, closer: str, item) -> Any:
        """An object (items are (key, value) pairs) or an array; a trailing comma is allowed."""
        self.pos += 1
        items = []
        while True:
            self.skip_space()
            if self.peek() == closer:
                self.pos += 1
                return dict(items) if closer == "}" else items
            items.append(item(depth + 1))
            self.skip_space()
            if self.peek() == ",":
                self.pos += 1
            elif self.peek() != closer:
                raise self.problem(f"expected ',' or '{closer}'")

    def member(self, depth: int) -> tuple[str, Any]:
        key = self.string() if self.peek() in ("'", '"') else self.word()
        if not key:
            raise self.problem("expected a key")
        self.skip_space()
        if self.peek() != ":":
            raise self.problem("expected ':'")
        self.pos += 1
        return key, self.value(depth)

    def word(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and (self.text[self.pos].isalnum() or self.text[self.pos] == "_"):
            self.pos += 1
        return self.text[start : self.pos]

    def number(self) -> int | float:
        start = self.pos
        self.pos += 1
        while self.pos < len(self.text) and (self.text[self.pos].isdigit() or self.text[self.pos] in ".eE+-"):
            self.pos += 1
        literal = self.text[start : self.pos]
        try:
            number = json.loads(literal)
        except ValueError as exc:
            raise self.problem(f"bad number {literal[:20]!r}") from exc
        if math.isinf(number):
            raise self.problem(f"number out of range {literal[:20]!r}")
        return number

    def string(self) -> str:
        quote = self.text[self.pos]
        self.pos += 1
        parts = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == quote:
                self.pos += 1
                try:  # joins \ud83d\ude00-style surrogate pairs, rejects lone halves
                    return "".join(parts).encode("utf-16", "surrogatepass").decode("utf-16")
                except UnicodeDecodeError as exc:
                    raise self.problem("invalid unicode escape") from exc
            if char == "\\":
                parts.append(self.escape())
                continue
            parts.append(char)
            self.pos += 1
        raise self.problem("unterminated string")

    def escape(self) -> str:
        code = self.text[self.pos + 1 : self.pos + 2]
        if code == "u":
            digits = self.text[self.pos + 2 : self.pos + 6]
            if len(digits) != 4 or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise self.problem("bad \\u escape")
            self.pos += 6
            return chr(int(digits, 16))
        self.pos += 2
        return _ESCAPES.get(code, code)  # \" \' \\ \/ and unknown escapes keep the character
