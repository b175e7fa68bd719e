"""A small, safe expression language for workflow conditions such as `refund_amount > 500`.

Definitions come from people we do not fully trust, so nothing here hands the input to Python:
a tokenizer and a recursive-descent parser build an immutable AST, and a separate evaluator
walks it. Variable values are copied into plain JSON-like types before any operator touches
them, so no method defined by a caller's class is ever invoked.
"""

import functools
import operator
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple, assert_never

MAX_LENGTH = 500
MAX_DEPTH = 32


class ExpressionError(ValueError):
    """The text is not a valid expression; `position` is the 0-based offset of the problem."""

    def __init__(self, reason: str, expression: str, position: int) -> None:
        super().__init__(f"{reason} at position {position}")
        self.expression = expression
        self.position = position


class EvaluationError(ValueError):
    """A valid expression cannot be evaluated against these variables."""


@dataclass(frozen=True, slots=True)
class Literal:
    value: bool | int | float | str | None


@dataclass(frozen=True, slots=True)
class Variable:
    path: str


@dataclass(frozen=True, slots=True)
class ListExpr:
    items: tuple["Node", ...]


@dataclass(frozen=True, slots=True)
class Unary:
    op: str
    operand: "Node"


@dataclass(frozen=True, slots=True)
class Binary:
    op: str
    left: "Node"
    right: "Node"


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    args: tuple["Node", ...]


Node = Literal | Variable | ListExpr | Unary | Binary | Call


@dataclass(frozen=True, slots=True)
class Expression:
    """A parsed expression: evaluate it many times, inspect what it reads, print it normalized."""

    node: Node

    def evaluate(self, variables: Mapping[str, Any]) -> Any:
        return _evaluate(self.node, variables)

    @property
    def variables(self) -> frozenset[str]:
        """The dotted paths read, so a definition can be checked against its inputs up front."""
        return frozenset(_variables(self.node))

    def __str__(self) -> str:
        return _render(self.node)


_TOKEN = re.compile(
    r"""(?P<space>\s+)|(?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
    |(?P<name>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)|(?P<op>==|!=|<=|>=|[<>+\-*/%()\[\],])
    |(?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")|(?P<quote>['"])""",
    re.ASCII | re.DOTALL | re.VERBOSE,
)
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t"}
_UNESCAPES = str.maketrans({"\\": "\\\\", "'": "\\'", "\n": "\\n", "\t": "\\t"})
_KEYWORDS = frozenset({"and", "or", "not", "in"})
_CONSTANTS = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}
_SINGLE_ARGUMENT = frozenset({"len", "lower", "upper", "abs", "exists"})
_FUNCTIONS = _SINGLE_ARGUMENT | {"min", "max"}


class _Token(NamedTuple):
    kind: str  # number, string, const, name, op (operators and keywords) or end
    text: str
    pos: int
    value: Any = None


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ExpressionError(f"unexpected {text[pos]!r}", text, pos)
        kind, word = match.lastgroup or "", match.group()
        if kind == "quote":
            raise ExpressionError("unterminated string starting", text, pos)
        if kind == "string":
            for escape in _ESCAPE.finditer(word, 1):
                if escape[1] not in _ESCAPES:
                    raise ExpressionError(f"invalid escape {escape[0]!r}", text, pos + escape.start())
            tokens.append(_Token(kind, word, pos, _ESCAPE.sub(lambda e: _ESCAPES[e[1]], word[1:-1])))
        elif kind == "number":
            value = int(word) if word.isdigit() else float(word)
            if value == float("inf"):
                raise ExpressionError("number out of range", text, pos)
            tokens.append(_Token(kind, word, pos, value))
        elif word in _CONSTANTS:
            tokens.append(_Token("const", word, pos, _CONSTANTS[word]))
        elif kind == "name" and word not in _KEYWORDS:
            offset = pos
            for segment in word.split("."):  # dunders would read like an attack, keywords like syntax
                if segment.startswith("__") or segment in _KEYWORDS or segment in _CONSTANTS:
                    raise ExpressionError(f"{segment!r} cannot be used as a name", text, offset)
                offset += len(segment) + 1
            tokens.append(_Token(kind, word, pos))
        elif kind != "space":
            tokens.append(_Token("op", word, pos))
        pos = match.end()
    return [*tokens, _Token("end", "", len(text))]


_PRECEDENCE = dict.fromkeys(("==", "!=", "<", "<=", ">", ">=", "in", "not in"), 4)
_PRECEDENCE |= {"or": 1, "and": 2, "+": 5, "-": 5, "*": 6, "/": 6, "%": 6}


class _Parser:
    """Precedence climbing over _PRECEDENCE; prefix operators and atoms live in `_unary`."""

    def __init__(self, text: str) -> None:
        self.text, self.tokens, self.index, self.depth = text, _tokenize(text), 0, 0

    def parse(self) -> Node:
        node = self._expression(1)
        if self._peek().kind != "end":
            raise self._unexpected(self._peek())
        return node

    def _peek(self, ahead: int = 0) -> _Token:
        return self.tokens[self.index + ahead]

    def _accept(self, op: str) -> bool:
        """Consume `op` if it comes next; only operators and keywords have such text."""
        if self._peek().text != op:
            return False
        self.index += 1
        return True

    def _expect(self, op: str) -> None:
        if not self._accept(op):
            raise self._unexpected(self._peek(), op)

    def _unexpected(self, token: _Token, expected: str | None = None) -> ExpressionError:
        found = "end of expression" if token.kind == "end" else repr(token.text)
        reason = f"expected {expected!r} but found {found}" if expected else f"unexpected {found}"
        return ExpressionError(reason, self.text, token.pos)

    def _descend(self, pos: int) -> None:
        """Bounds recursion, so a hostile input cannot exhaust the stack; callers decrement."""
        if self.depth == MAX_DEPTH:
            raise ExpressionError(f"nesting deeper than {MAX_DEPTH} levels", self.text, pos)
        self.depth += 1

    def _operator(self) -> str | None:
        text = self._peek().text
        if text == "not" and self._peek(1).text == "in":
            return "not in"
        return text if text in _PRECEDENCE else None

    def _expression(self, floor: int) -> Node:
        """Parse operators binding at least as tightly as `floor`; `not` sits at level 3."""
        token = self._peek()
        if floor <= 3 and self._accept("not"):
            self._descend(token.pos)
            left: Node = Unary("not", self._expression(3))
            self.depth -= 1
        else:
            left = self._unary()
        compared = False
        while (op := self._operator()) and _PRECEDENCE[op] >= floor:
            if _PRECEDENCE[op] == 4:
                if compared:
                    raise ExpressionError("comparisons cannot be chained", self.text, self._peek().pos)
                compared = True
            self.index += 2 if op == "not in" else 1
            left = Binary(op, left, self._expression(_PRECEDENCE[op] + 1))
        return left

    def _unary(self) -> Node:
        token = self._peek()
        self.index += 1
        if token.kind in ("number", "string", "const"):
            return Literal(token.value)
        if token.kind == "name":
            return self._call(token) if self._accept("(") else Variable(token.text)
        if token.text not in ("-", "(", "["):
            raise self._unexpected(token)
        self._descend(token.pos)
        if token.text == "-":
            node: Node = Unary("-", self._unary())
        elif token.text == "[":
            node = ListExpr(self._items("]"))
        else:
            node = self._expression(1)
            self._expect(")")
        self.depth -= 1
        return node

    def _items(self, close: str) -> tuple[Node, ...]:
        items: list[Node] = []
        while not self._accept(close):
            if items and not self._accept(","):
                raise self._unexpected(self._peek(), close)
            items.append(self._expression(1))
        return tuple(items)

    def _call(self, name: _Token) -> Node:
        """Only whitelisted functions exist; anything else is refused before evaluation."""
        if name.text not in _FUNCTIONS:
            raise ExpressionError(f"unknown function {name.text!r}", self.text, name.pos)
        self._descend(name.pos)
        args = self._items(")")
        self.depth -= 1
        if name.text == "exists" and not (len(args) == 1 and isinstance(args[0], Variable)):
            raise ExpressionError("exists() takes one variable name", self.text, name.pos)
        if not args or (name.text in _SINGLE_ARGUMENT and len(args) != 1):
            raise ExpressionError(f"wrong number of arguments for {name.text}()", self.text, name.pos)
        return Call(name.text, args)


@functools.lru_cache(maxsize=4096)
def parse(text: str) -> Expression:
    """Parse `text`, raising ExpressionError with the offending position. Expressions are
    immutable, and a worker meets the same few conditions at every step: each is parsed once."""
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"expression longer than {MAX_LENGTH} characters", text, MAX_LENGTH)
    if not text.strip():
        raise ExpressionError("empty expression", text, 0)
    return Expression(_Parser(text).parse())


def _precedence(node: Node) -> int:
    match node:
        case Binary(op):
            return _PRECEDENCE[op]
        case Unary(op):
            return 3 if op == "not" else 7
    return 8


def _render(node: Node, parent: int = 0, strict: bool = False) -> str:
    """Source text with only the parentheses the tree needs, so equal trees print equally."""
    own = _precedence(node)
    match node:
        case Literal(None):
            text = "null"
        case Literal(bool(value)):
            text = "true" if value else "false"
        case Literal(str(value)):
            text = f"'{value.translate(_UNESCAPES)}'"
        case Literal(value):
            text = repr(value)
        case Variable(path):
            text = path
        case ListExpr(items):
            text = f"[{', '.join(map(_render, items))}]"
        case Call(name, args):
            text = f"{name}({', '.join(map(_render, args))})"
        case Unary(op, operand):
            text = f"{'not ' if op == 'not' else '-'}{_render(operand, own)}"
        case Binary(op, left, right):  # comparisons do not chain, so both sides need parentheses
            text = f"{_render(left, own, own == 4)} {op} {_render(right, own, True)}"
    return f"({text})" if own < parent or (strict and own == parent) else text


def _variables(node: Node) -> Iterator[str]:
    match node:
        case Variable(path):
            yield path
        case Unary(_, operand):
            yield from _variables(operand)
        case Binary(_, left, right):
            yield from _variables(left)
            yield from _variables(right)
        case ListExpr(children) | Call(_, children):
            for child in children:
                yield from _variables(child)


_OPERATORS = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "%": operator.mod,
}  # fmt: skip
_KINDS = {type(None): "null", bool: "boolean", int: "number", float: "number", str: "string"}
_KINDS |= {list: "list", dict: "map"}
# isinstance check and copy into the exact builtin type (bypassing any override in a subclass).
_SCALARS = (
    (bool, bool), (int, int.__index__), (float, float.__float__), (Decimal, Decimal.__float__),
    (str, str.__str__),
)  # fmt: skip


def _kind(value: Any) -> str:
    """Evaluated values are always exact builtin types, so their type names them."""
    return _KINDS[type(value)]


def _resolve(path: str, variables: Mapping[str, Any]) -> Any:
    current: Any = variables
    for key in path.split("."):
        if not isinstance(current, Mapping) or key not in current:
            raise EvaluationError(f"unknown variable {path!r}")
        current = current[key]
    return current


def _plain(value: Any, path: str, depth: int = 0) -> Any:
    """Copy into exact builtin types, so operators never dispatch to a caller's methods."""
    if value is None:
        return None
    for kind, copy in _SCALARS:
        if isinstance(value, kind):
            return copy(value)
    if depth < MAX_DEPTH and isinstance(value, list | tuple):
        return [_plain(item, path, depth + 1) for item in value]
    if depth < MAX_DEPTH and isinstance(value, Mapping) and all(isinstance(key, str) for key in value):
        return {str.__str__(key): _plain(item, path, depth + 1) for key, item in value.items()}
    raise EvaluationError(f"variable {path!r} holds an unsupported {type(value).__name__!r} value")


def _boolean(value: Any, op: str) -> bool:
    """No truthiness: `amount and ...` is a mistake in a condition, not a shortcut."""
    if not isinstance(value, bool):
        raise EvaluationError(f"'{op}' needs booleans, got {_kind(value)}")
    return value


def _equal(left: Any, right: Any) -> bool:
    """Structural equality in which booleans are never numbers (so `1 == true` is false)."""
    if isinstance(left, bool) or isinstance(right, bool):
        return left is right
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(_equal, left, right))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_equal(item, right[key]) for key, item in left.items())
    return left == right


def _apply(op: str, left: Any, right: Any) -> Any:
    if op in ("==", "!="):
        return _equal(left, right) == (op == "==")
    if op in ("in", "not in"):
        if isinstance(right, str) and isinstance(left, str):
            return (left in right) == (op == "in")
        if isinstance(right, list | dict):
            return any(_equal(left, item) for item in right) == (op == "in")
        raise EvaluationError(f"'{op}' cannot look for a {_kind(left)} in a {_kind(right)}")
    kinds = {_kind(left), _kind(right)}
    if kinds != {"number"} and not (kinds == {"string"} and op in ("<", "<=", ">", ">=")):
        raise EvaluationError(f"'{op}' cannot combine {_kind(left)} and {_kind(right)}")
    try:
        return _OPERATORS[op](left, right)
    except ZeroDivisionError:
        raise EvaluationError("division by zero") from None
    except OverflowError:
        raise EvaluationError("number too large") from None


def _call(name: str, args: list[Any]) -> Any:
    match name, args:
        case "len", [str() | list() | dict() as value]:
            return len(value)
        case "lower", [str(value)]:
            return value.lower()
        case "upper", [str(value)]:
            return value.upper()
        case "abs", [value] if _kind(value) == "number":
            return abs(value)
        case "min" | "max", _:
            values = args[0] if len(args) == 1 and isinstance(args[0], list) else args
            if {_kind(value) for value in values} in ({"number"}, {"string"}):
                return min(values) if name == "min" else max(values)
    raise EvaluationError(f"{name}() cannot be applied to ({', '.join(map(_kind, args))})")


def _evaluate(node: Node, variables: Mapping[str, Any]) -> Any:
    match node:
        case Literal(value):
            return value
        case Variable(path):
            return _plain(_resolve(path, variables), path)
        case ListExpr(items):
            return [_evaluate(item, variables) for item in items]
        case Unary("not", operand):
            return not _boolean(_evaluate(operand, variables), "not")
        case Unary(_, operand):
            if _kind(value := _evaluate(operand, variables)) != "number":
                raise EvaluationError(f"'-' needs a number, got {_kind(value)}")
            return -value
        case Binary("and" | "or" as op, left, right):  # short-circuits: the right side may not exist
            first = _boolean(_evaluate(left, variables), op)
            return first if first == (op == "or") else _boolean(_evaluate(right, variables), op)
        case Binary(op, left, right):
            return _apply(op, _evaluate(left, variables), _evaluate(right, variables))
        case Call("exists", [Variable(path)]):
            try:
                _resolve(path, variables)
            except EvaluationError:
                return False
            return True
        case Call(name, args):
            return _call(name, [_evaluate(arg, variables) for arg in args])
        case _:
            assert_never(node)


def evaluate(text: str, variables: Mapping[str, Any]) -> Any:
    """Parse and evaluate in one go; parse once and reuse the Expression when repeating."""
    return parse(text).evaluate(variables)


def is_true(expression: str | Expression, variables: Mapping[str, Any]) -> bool:
    """Evaluate a condition, refusing anything but a boolean so `amount` never passes as truthy."""
    parsed = parse(expression) if isinstance(expression, str) else expression
    result = parsed.evaluate(variables)
    if not isinstance(result, bool):
        raise EvaluationError(f"condition {str(parsed)!r} gave a {_kind(result)}, not a boolean")
    return result
