"""A deterministic model made of keyword rules and templates, for the demo and the tests.

The same request always gets the same reply (no randomness, no clock), so runs replay
identically and tests can assert exact outputs. Each skill answers one prompt purpose;
any other purpose gets the output schema's required properties with typed defaults.
"""

import json
import re
from collections.abc import Callable
from typing import Any

from . import ModelReply, ModelRequest, ProviderConfigError, cost_usd, estimate_tokens
from .normalise import schema_problem


def _phrases(*phrases: str) -> tuple[re.Pattern, ...]:
    """Case-insensitive phrases matched on word boundaries ("bug" is not in "debug")."""
    return tuple(
        re.compile(
            (r"\b" if p[0].isalnum() else "") + re.escape(p) + (r"\b" if p[-1].isalnum() else ""), re.I
        )
        for p in phrases
    )


# Refund and incident compete; question is what a message is when neither matches.
_INTENTS = {
    "refund": _phrases(
        "refund", "money back", "reimburse", "charged twice", "double charged", "overcharged", "chargeback"
    ),
    "incident": _phrases(
        "outage", "is down", "not working", "does not work", "doesn't work", "error", "crash",
        "crashes", "broken", "cannot log in", "can't log in", "unavailable", "bug",
    ),
}  # fmt: skip
_QUESTION = _phrases("how do i", "how can i", "how to", "what is", "where", "can i", "?")
_WANTS_HUMAN = _phrases(
    "human", "real person", "speak to someone", "talk to someone", "speak to a person",
    "talk to a person", "representative", "supervisor", "manager",
)  # fmt: skip
_ORDER = re.compile(r"(?:\border\s*(?:number|no\.?|id)?\s*[:#]?\s*|#)([A-Z]*-?\d{3,}[A-Z0-9-]*)", re.I)
_AMOUNT = re.compile(
    r"[$€£]\s?(?P<symbol>\d[\d,]*(?:\.\d+)?)"
    r"|(?P<unit>\d[\d,]*(?:\.\d+)?)\s?(?:(?:usd|eur|gbp|dollars?|euros?)\b|€)"
    r"|\brefund\s+of\s+(?P<bare>\d[\d,]*(?:\.\d+)?)",
    re.I,
)
_RISKY = (
    (re.compile(r"\bguarantee", re.I), 0.25, "promises an outcome"),
    (re.compile(r"\bpromise", re.I), 0.15, "promises an outcome"),
    (re.compile(r"\b(?:always|never)\b", re.I), 0.1, "makes an absolute claim"),
    (re.compile(r"100\s?%"), 0.15, "makes an absolute claim"),
    (re.compile(r"\bimmediately\b", re.I), 0.05, "commits to a timeline"),
)
_OPENINGS = {
    "refund": "Thank you for contacting us about a refund. We have received your request "
    "and will confirm the outcome by email.",
    "incident": "Thank you for reporting this problem. Our engineers are investigating it "
    "and we will keep you updated on the case.",
    "question": "Thank you for your question. Here is what we can tell you.",
}


def complete(request: ModelRequest) -> ModelReply:
    skill = _SKILLS.get(request.purpose)
    output = skill(request) if skill else {}
    if request.output_schema is not None:
        output = _fit(output, request.output_schema, request.purpose)
    raw_text = json.dumps(output, sort_keys=True, ensure_ascii=False)
    prompt_tokens, completion_tokens = estimate_tokens(request.prompt), estimate_tokens(raw_text)
    return ModelReply(
        output=output,
        raw_text=raw_text,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost_usd=cost_usd(request.config, prompt_tokens, completion_tokens),
        provider="builtin",
        model=str(request.config.get("model", "")),
        config_name=request.config_name,
        latency_ms=0.0,
    )


def _subject(request: ModelRequest, variable: str) -> str:
    """The variable the skill reads, or the whole rendered prompt when it is missing."""
    value = request.variables.get(variable)
    return value if isinstance(value, str) else request.prompt


def _triage(request: ModelRequest) -> dict:
    """Keyword intent; confidence grows with evidence and an order reference, falls with contradictions."""
    text = _subject(request, "text")
    hits = {intent: _count(patterns, text) for intent, patterns in _INTENTS.items()}
    intent = max(hits, key=hits.__getitem__)  # ties go to the first: refund
    if not hits[intent]:
        intent = "question"
        hits[intent] = _count(_QUESTION, text)
    order = _ORDER.search(text)
    confidence = 0.45
    if hits[intent]:
        confidence += 0.25 + 0.1 * min(hits[intent] - 1, 2)
    if order:
        confidence += 0.2
    confidence -= 0.15 * sum(1 for name, count in hits.items() if name != intent and count)
    wants_human = _count(_WANTS_HUMAN, text) > 0
    reasons = [f"{hits[intent]} {intent} keyword(s)"]
    if order:
        reasons.append(f"order reference {order.group(1)}")
    if wants_human:
        reasons.append("asks for a person")
    return {
        "intent": intent,
        "confidence": round(min(max(confidence, 0.2), 0.99), 2),
        "refund_amount": _amount(text) if intent == "refund" else 0,
        "order_id": order.group(1) if order else "",
        "next": "human" if wants_human else "retrieve",
        "reason": "; ".join(reasons),
    }


def _count(patterns: tuple[re.Pattern, ...], text: str) -> int:
    return sum(1 for pattern in patterns if pattern.search(text))


def _amount(text: str) -> int | float:
    match = _AMOUNT.search(text)
    if not match:
        return 0
    amount = float(next(group for group in match.groups() if group).replace(",", ""))
    return int(amount) if amount.is_integer() else amount


def _draft_reply(request: ModelRequest) -> dict:
    intent = str(request.variables.get("intent") or "question")
    titles = [
        article["title"] if isinstance(article, dict) else article
        # `hits` is what a knowledge-base search step leaves in the facts.
        for article in request.variables.get("articles") or request.variables.get("hits") or []
        if (isinstance(article, dict) and isinstance(article.get("title"), str)) or isinstance(article, str)
    ]
    details = (
        f"These articles explain the details: {'; '.join(titles)}."
        if titles
        else "A member of our team will follow up with the details."
    )
    opening = _OPENINGS.get(intent, _OPENINGS["question"])
    reply = f"Hello,\n\n{opening}\n\n{details}\n\nKind regards,\nCustomer Support"
    return {"reply": reply, "intent": intent, "cited_articles": titles}


def _policy_check(request: ModelRequest) -> dict:
    """Starts from a good score and loses points for promises support policy forbids."""
    reply = _subject(request, "reply")
    if not reply.strip():
        return {"score": 0.0, "issues": ["the reply is empty"]}
    score = 0.95
    issues = []
    for pattern, penalty, why in _RISKY:
        if found := pattern.search(reply):
            score -= penalty
            issues.append(f'{why} ("{found.group()}")')
    return {"score": round(max(score, 0.0), 2), "issues": issues}


def _schema_validation(request: ModelRequest) -> dict:
    """The batch's observed columns against the producer's promise."""
    observed = _mapping(request, "columns")
    expected = _mapping(request, "expected_columns")
    missing = sorted(set(expected) - set(observed))
    unexpected = sorted(set(observed) - set(expected))
    mismatched = sorted(
        f"{name}: {observed[name]} instead of {kind}"
        for name, kind in expected.items()
        if name in observed and observed[name] != kind
    )
    return {
        "schema_valid": not (missing or unexpected or mismatched),
        "missing_columns": missing,
        "unexpected_columns": unexpected,
        "type_mismatches": mismatched,
    }


def _anomaly_detection(request: ModelRequest) -> dict:
    """High: nulls in a key column, negative amounts, or under half the usual rows; medium: a
    schema change or a 20% drop in rows; low otherwise."""
    variables = request.variables
    rows, baseline = _number(variables.get("row_count")), _number(variables.get("baseline_rows"))
    nulls = _mapping(request, "null_counts")
    anomalies, high = [], False
    for column, count in sorted(nulls.items()):
        anomalies.append(f"{count} null value(s) in {column}")
        high = high or column.endswith("_id")
    if negative := _number(variables.get("negative_amounts")):
        anomalies.append(f"{negative:g} negative amount(s)")
        high = True
    if baseline and rows < baseline:
        drop = 1 - rows / baseline
        anomalies.append(f"{drop:.0%} fewer rows than usual ({rows:g} instead of {baseline:g})")
        high = high or drop >= 0.5
        medium = drop >= 0.2
    else:
        medium = False
    if variables.get("schema_valid") is False:
        anomalies.append("the schema changed")
        medium = True
    severity = "high" if high else "medium" if medium else "low"
    return {"anomalies": anomalies, "severity": severity, "confidence": 0.9 if anomalies else 0.95}


def _lineage_tagging(request: ModelRequest) -> dict:
    variables = request.variables
    columns = _mapping(request, "columns")
    tags = sorted(
        {"pii" for name in columns if name in ("email", "customer_id", "phone")}
        | {"finance" for name in columns if name in ("amount", "currency")}
    )
    lineage = {
        "dataset": variables.get("dataset", ""),
        "source": variables.get("source", ""),
        "upstream": variables.get("upstream") or [],
    }
    return {"lineage": lineage, "tags": tags}


def _pipeline_report(request: ModelRequest) -> dict:
    variables = request.variables
    anomalies = [a for a in variables.get("anomalies") or [] if isinstance(a, str)]
    dataset, batch = variables.get("dataset", "the dataset"), variables.get("batch_id", "")
    severity = variables.get("severity", "low")
    findings = "; ".join(anomalies) if anomalies else "no anomalies found"
    report = f"Batch {batch} of {dataset}: severity {severity}. Findings: {findings}."
    return {"report": report}


def _mapping(request: ModelRequest, name: str) -> dict:
    value = request.variables.get(name)
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


_SKILLS: dict[str, Callable[[ModelRequest], dict]] = {
    "triage": _triage,
    "draft_reply": _draft_reply,
    "policy_check": _policy_check,
    "schema_validation": _schema_validation,
    "anomaly_detection": _anomaly_detection,
    "lineage_tagging": _lineage_tagging,
    "pipeline_report": _pipeline_report,
}


def _fit(output: dict, schema: dict, purpose: str) -> dict:
    """Drop what the schema forbids, default what it requires; fail loudly if that is not enough."""
    properties = schema.get("properties", {})
    if schema.get("additionalProperties") is False:
        output = {key: value for key, value in output.items() if key in properties}
    for name in schema.get("required", []):
        output.setdefault(name, _default(properties.get(name, {})))
    if problem := schema_problem(output, schema):
        raise ProviderConfigError(
            f"the builtin provider cannot satisfy the output schema of {purpose}: {problem}"
        )
    return output


def _default(schema: dict) -> Any:
    for keyword in ("const", "default"):
        if keyword in schema:
            return schema[keyword]
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = kind[0] if kind else None
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: _default(properties.get(name, {})) for name in schema.get("required", [])}
    minimum = schema.get("minimum", 0)
    return {"array": [], "string": "", "integer": minimum, "number": minimum, "boolean": False}.get(kind)
