"""The workflow condition language: what it accepts, what it refuses, and where."""

import builtins
import dataclasses
from decimal import Decimal

import pytest

from registry.expressions import (
    MAX_DEPTH,
    MAX_LENGTH,
    EvaluationError,
    Expression,
    ExpressionError,
    evaluate,
    is_true,
    parse,
)

CUSTOMER = {"tier": "gold", "address": {"country": "NL"}, "tags": ["vip", "early"]}
VARIABLES = {
    "refund_amount": 750,
    "confidence": 0.9,
    "customer": CUSTOMER,
    "name": "Ada",
    "numbers": [1, 2, 3],
    "payload": {"key": 1},
    "flag": True,
    "nothing": None,
}


@pytest.mark.parametrize(
    ("text", "variables", "expected"),
    [
        ("refund_amount > 500", {"refund_amount": 750}, True),
        ("refund_amount > 500", {"refund_amount": 500}, False),
        ("refund_amount > 500", {"refund_amount": 500.01}, True),
        ("refund_amount > 500", {"refund_amount": Decimal("500.01")}, True),
        ("confidence < 0.85", {"confidence": 0.5}, True),
        ("confidence < 0.85", {"confidence": 0.85}, False),
        ("confidence < 0.85", {"confidence": 0.9}, False),
        ("confidence < 0.85", {"confidence": 0}, True),
    ],
)
def test_seed_conditions(text, variables, expected):
    assert is_true(text, variables) is expected
    assert is_true(parse(text), variables) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("10 - 4 - 3", 3),
        ("10 - (4 - 3)", 9),
        ("2 * 3 % 4", 2),
        ("7 / 2", 3.5),
        ("7 % 3", 1),
        ("-2 * 3", -6),
        ("-(2 + 3)", -5),
        ("- -3", 3),
        ("1e3", 1000.0),
        ("2.5e-1", 0.25),
        ("not true or true", True),
        ("not (true or true)", False),
        ("true or false and false", True),
        ("(true or false) and false", False),
        ("not 1 == 2", True),
        ("1 + 1 == 2 and 3 > 2", True),
        ("not not true", True),
        ("(1 < 2) == true", True),
    ],
)
def test_precedence_and_parentheses(text, expected):
    result = evaluate(text, {})
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    "text",
    [
        "false and unknown_var",
        "false and 1 / 0 == 1",
        "false and 'a' < 1",
        "not (true or unknown_var)",
        "exists(missing) and missing > 1",
    ],
)
def test_and_or_short_circuit(text):
    assert evaluate(text, {}) is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("true and unknown_var", "unknown variable 'unknown_var'"),
        ("false or unknown_var", "unknown variable 'unknown_var'"),
        ("1 and true", "needs booleans"),
        ("true and 1", "needs booleans"),
        ("false or 'yes'", "needs booleans"),
        ("not 0", "needs booleans"),
    ],
)
def test_logic_needs_booleans_when_evaluated(text, message):
    with pytest.raises(EvaluationError, match=message):
        evaluate(text, {})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("'abc' < 'abd'", True),
        ("'b' >= 'a'", True),
        ('name == "Ada"', True),
        ("name != 'Ada'", False),
        ("'It\\'s' == \"It's\"", True),
        ("'a\\nb' == \"a\\nb\"", True),
        ("len('\\t\\\\')", 2),
        ("'gold' in ['gold', 'platinum']", True),
        ("customer.tier not in ['silver']", True),
        ("'ell' in 'hello'", True),
        ("'key' in payload", True),
        ("'other' not in payload", True),
        ("3 in numbers", True),
        ("'vip' in customer.tags", True),
        ("1 in [true]", False),
        ("true in [1]", False),
        ("null in [null]", True),
        ("[1] in [[1], [2]]", True),
    ],
)
def test_strings_and_membership(text, expected):
    assert evaluate(text, VARIABLES) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 == 1.0", True),
        ("1 == true", False),
        ("0 == false", False),
        ("'1' == 1", False),
        ("null == null", True),
        ("nothing == None", True),
        ("flag == True", True),
        ("[1, 'a'] == [1, 'a']", True),
        ("[1] == [true]", False),
        ("numbers == [1, 2, 3]", True),
        ("numbers != [1, 2]", True),
        ("customer.address == customer.address", True),
    ],
)
def test_equality_never_confuses_booleans_and_numbers(text, expected):
    assert evaluate(text, VARIABLES) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("customer.tier == 'gold'", True),
        ("customer.address.country == 'NL'", True),
        ("customer.address.country", "NL"),
        ("customer.tags", ["vip", "early"]),
    ],
)
def test_dotted_paths(text, expected):
    assert evaluate(text, VARIABLES) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("len('abc')", 3),
        ("len(numbers)", 3),
        ("len(payload)", 1),
        ("len([])", 0),
        ("lower('MiXed')", "mixed"),
        ("upper(customer.tier)", "GOLD"),
        ("abs(-3)", 3),
        ("abs(-2.5)", 2.5),
        ("min(3, 1, 2)", 1),
        ("max(3, 1.5, 2)", 3),
        ("min(numbers)", 1),
        ("max('a', 'c', 'b')", "c"),
        ("min(4)", 4),
        ("exists(customer.tier)", True),
        ("exists(customer.missing)", False),
        ("exists(missing)", False),
        ("exists(refund_amount.value)", False),
        ("exists(nothing)", True),
    ],
)
def test_functions(text, expected):
    result = evaluate(text, VARIABLES)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    "text",
    ["len(1)", "len(true)", "lower(1)", "upper(null)", "abs('x')", "abs(true)", "min(1, 'a')", "min([])"],
)
def test_functions_reject_wrong_types(text):
    with pytest.raises(EvaluationError, match=r"\(\) cannot be applied"):
        evaluate(text, {})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("refund_amount > 500", {"refund_amount"}),
        ("customer.tier == 'gold' and confidence < 0.85", {"customer.tier", "confidence"}),
        ("exists(a.b) or len(c) > max(d, 1)", {"a.b", "c", "d"}),
        ("x in [y, 'z', -w]", {"x", "y", "w"}),
        ("not (a == a)", {"a"}),
        ("1 + 2", set()),
    ],
)
def test_variables_lists_dotted_paths(text, expected):
    assert parse(text).variables == frozenset(expected)


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("1+2*3", "1 + 2 * 3"),
        ("(1+2)*3", "(1 + 2) * 3"),
        ("a-(b-c)", "a - (b - c)"),
        ("(a-b)-c", "a - b - c"),
        ("-(a*b)", "-(a * b)"),
        ("not(a==b)", "not a == b"),
        ("(not a)==b", "(not a) == b"),
        ("(a == b) == c", "(a == b) == c"),
        ("a or (b or c)", "a or (b or c)"),
        ("(a or b) and c", "(a or b) and c"),
        ('"x"', "'x'"),
        ('"it\'s\\n"', "'it\\'s\\n'"),
        ("True and None == False", "true and null == false"),
        ("[1,2 ,3]", "[1, 2, 3]"),
        ("exists( a.b )", "exists(a.b)"),
        ("x not  in [1]", "x not in [1]"),
        ("1e3", "1000.0"),
    ],
)
def test_str_normalizes(text, normalized):
    assert str(parse(text)) == normalized


@pytest.mark.parametrize(
    "text",
    [
        "refund_amount > 500 or confidence < 0.85",
        "not (customer.tier in ['gold', 'platinum'] and refund_amount - 100 >= 2 * 300)",
        "(1 - 2) - (3 - 4) * -(5 % 3) / 2",
        "max(numbers) + min(1, 2) == len(customer.tags) + 1",
        "lower(upper(name)) == 'ada' and exists(customer.address.country)",
        '\'tab\\there\' != "quote\\"d" and not not flag',
        "(confidence < 0.85) == (refund_amount > 500)",
    ],
)
def test_str_round_trips(text):
    expression = parse(text)
    again = parse(str(expression))
    assert str(again) == str(expression)
    assert again == expression
    assert again.evaluate(VARIABLES) == expression.evaluate(VARIABLES)


@pytest.mark.parametrize(
    ("text", "position", "message"),
    [
        ("__import__('os').system('x')", 0, "'__import__' cannot be used as a name"),
        ("a.__class__", 2, "'__class__' cannot be used"),
        ("a.b.__globals__", 4, "'__globals__' cannot be used"),
        ("a[0]", 1, "unexpected '\\['"),
        ("1 +", 3, "unexpected end of expression"),
        ("(a > 1", 6, "expected '\\)' but found end of expression"),
        ("a > 1)", 5, "unexpected '\\)' at position 5"),
        ("'unterminated", 0, "unterminated string starting at position 0"),
        ('x == "open', 5, "unterminated string"),
        ("'a\\q'", 2, "invalid escape"),
        ("a < b < c", 6, "cannot be chained"),
        ("a == b != c", 7, "cannot be chained"),
        ("a = 1", 2, "unexpected '='"),
        ("lambda: 1", 6, "unexpected ':'"),
        ("open('x')", 0, "unknown function 'open'"),
        ("customer.get('x')", 0, "unknown function 'customer.get'"),
        ("a; b", 1, "unexpected ';'"),
        ("`a`", 0, "unexpected '`'"),
        ("a ** 2", 3, "unexpected '\\*'"),
        ("f'{x}'", 1, "unexpected"),
        ("x if y else z", 2, "unexpected 'if'"),
        ("a == not b", 5, "unexpected 'not'"),
        ("and > 1", 0, "unexpected 'and'"),
        ("x.in", 2, "'in' cannot be used as a name"),
        ("1 2", 2, "unexpected '2'"),
        ("[1, 2", 5, "expected '\\]'"),
        ("len()", 0, "wrong number of arguments"),
        ("lower('a', 'b')", 0, "wrong number of arguments"),
        ("max()", 0, "wrong number of arguments"),
        ("exists('a')", 0, "exists\\(\\) takes one variable name"),
        ("1e999", 0, "number out of range"),
        ("", 0, "empty expression"),
        ("   ", 0, "empty expression"),
        ("x" * (MAX_LENGTH + 1), MAX_LENGTH, "longer than 500 characters"),
        ("(" * 40 + "1" + ")" * 40, MAX_DEPTH, "nesting deeper than 32"),
        ("[" * 40 + "]" * 40, MAX_DEPTH, "nesting deeper"),
        ("-" * 40 + "1", MAX_DEPTH, "nesting deeper"),
        ("not " * 40 + "true", 4 * MAX_DEPTH, "nesting deeper"),
        ("abs(" * 40 + "1" + ")" * 40, 4 * MAX_DEPTH, "nesting deeper"),
    ],
)
def test_syntax_errors_point_at_the_problem(text, position, message):
    with pytest.raises(ExpressionError, match=message) as caught:
        parse(text)
    assert caught.value.position == position
    assert caught.value.expression == text
    assert str(caught.value).endswith(f"at position {position}")
    assert isinstance(caught.value, ValueError)


def test_limits_are_inclusive():
    longest = "1" + " + 1" * ((MAX_LENGTH - 1) // 4)
    assert len(longest) <= MAX_LENGTH
    assert evaluate(longest, {}) == (MAX_LENGTH - 1) // 4 + 1
    assert evaluate("(" * MAX_DEPTH + "1" + ")" * MAX_DEPTH, {}) == 1


@pytest.mark.parametrize(
    ("text", "variables", "message"),
    [
        ("refund_amount > 500", {}, "unknown variable 'refund_amount'"),
        ("customer.missing == 1", VARIABLES, "unknown variable 'customer.missing'"),
        ("refund_amount.value > 1", VARIABLES, "unknown variable 'refund_amount.value'"),
        ("'a' < 1", {}, "'<' cannot combine string and number"),
        ("true < false", {}, "cannot combine boolean and boolean"),
        ("flag > 0", VARIABLES, "cannot combine boolean and number"),
        ("[1] < [2]", {}, "cannot combine list and list"),
        ("nothing >= 1", VARIABLES, "cannot combine null and number"),
        ("true + 1", {}, "'\\+' cannot combine boolean and number"),
        ("'a' + 'b'", {}, "cannot combine string and string"),
        ("-'a'", {}, "'-' needs a number, got string"),
        ("-true", {}, "needs a number"),
        ("1 / 0", {}, "division by zero"),
        ("1 % 0", {}, "division by zero"),
        ("1.5 / 0.0", {}, "division by zero"),
        ("1 in 'abc'", {}, "cannot look for a number in a string"),
        ("'a' in 1", {}, "cannot look for a string in a number"),
        ("1" + "0" * 400 + " / 3", {}, "number too large"),
    ],
)
def test_evaluation_errors(text, variables, message):
    with pytest.raises(EvaluationError, match=message):
        evaluate(text, variables)


@pytest.mark.parametrize(("text", "kind"), [("1 + 1", "number"), ("name", "string"), ("nothing", "null")])
def test_is_true_requires_a_boolean(text, kind):
    with pytest.raises(EvaluationError, match=f"gave a {kind}, not a boolean"):
        is_true(text, VARIABLES)


def test_expressions_are_immutable_values():
    expression = parse("a > 1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        expression.node = parse("true").node  # type: ignore[misc]
    assert isinstance(expression, Expression)
    assert expression == parse("a>1")
    assert hash(expression) == hash(parse("a>1"))


class Hostile:
    """Every operator raises: evaluation must refuse the value rather than call into it."""

    def _called(self, *args):
        raise AssertionError("the evaluator called into a variable's class")

    __lt__ = __le__ = __gt__ = __ge__ = __eq__ = __ne__ = __bool__ = _called
    __len__ = __contains__ = __add__ = __radd__ = __neg__ = __abs__ = __index__ = _called
    __hash__ = None


class HostileInt(int):
    __lt__ = __le__ = __gt__ = __ge__ = __eq__ = __ne__ = Hostile._called
    __add__ = __radd__ = __neg__ = __abs__ = __bool__ = __index__ = __int__ = Hostile._called
    __hash__ = int.__hash__


class HostileStr(str):
    __lt__ = __eq__ = __ne__ = __contains__ = __len__ = __str__ = Hostile._called
    lower = upper = Hostile._called
    __hash__ = str.__hash__


@pytest.mark.parametrize(
    "text",
    [
        "x < 3 and x <= 2 and x > 1 and x >= 2",
        "x == 2 and x != 3",
        "x + 1 == 3 and -x == -2 and abs(x) == 2",
        "x in [2] and min(x, 5) == 2",
        "s == 'Gold' and s < 'H' and lower(s) == 'gold' and upper(s) == 'GOLD'",
        "'ol' in s and len(s) == 4 and s in ['Gold']",
        "items == [2, 'Gold'] and x in items",
        "m.inner == 2 and 'inner' in m",
    ],
)
def test_evaluation_never_calls_methods_of_variable_values(text):
    x, s = HostileInt(2), HostileStr("Gold")
    variables = {"x": x, "s": s, "items": (x, s), "m": {"inner": x}}
    assert is_true(text, variables) is True


@pytest.mark.parametrize(
    "text", ["h == 1", "h < 1", "h == true", "1 in h", "h in [1]", "len(h)", "-h", "not h", "h"]
)
def test_unsupported_values_are_refused_without_being_touched(text):
    with pytest.raises(EvaluationError, match="unsupported 'Hostile' value"):
        evaluate(text, {"h": Hostile()})


def test_unsupported_values_are_refused_inside_containers():
    with pytest.raises(EvaluationError, match="variable 'items' holds an unsupported 'Hostile' value"):
        evaluate("1 in items", {"items": [1, Hostile()]})
    assert evaluate("exists(h)", {"h": Hostile()}) is True


def test_no_dynamic_code_execution():
    def forbidden(*args, **kwargs):
        raise AssertionError("dynamic code execution or import")

    names = ("eval", "exec", "compile", "__import__", "open", "getattr")
    original = {name: vars(builtins)[name] for name in names}
    vars(builtins).update(dict.fromkeys(names, forbidden))
    try:
        expression = parse("customer.tier in ['gold'] and len(lower(name)) > 2 and max(numbers) == 3")
        result = expression.evaluate(VARIABLES), str(expression), expression.variables
    finally:
        vars(builtins).update(original)
    assert result == (True, str(expression), {"customer.tier", "name", "numbers"})
