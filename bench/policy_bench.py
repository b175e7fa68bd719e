"""Policy decision latency, embedded engine, default bundle.

Measures 10,000 `tool.call` decisions through the service path (input validation, engine
evaluation of the compiled bundle, result parsing and validation), and in the same run the
baseline: the same precompiled JSON Schema check of the same inputs that a decision starts
with. jsonschema's validator, which explains refused inputs, is timed beside it for reference,
and so is the engine's floor: a `tool.call` rule that ignores its input and answers a constant
allow, through the same path (what any policy pays before it checks anything).
Targets (issue "Policy engine"): p99 under 200 µs, and under 10x the schema validation.
"""

import sys
import time

import _setup  # noqa: F401  (Django set-up)
from _setup import describe, percentile

from policy.bundles import PolicyBundle, shipped_default_bundle
from policy.decision_points import POINTS
from policy.engines.embedded import EmbeddedEngine
from policy.services import decision_input, policy_evaluate

DECISIONS = 10_000
TARGET_P99_US = 200
TARGET_RATIO = 10
CONSTANT_ALLOW = PolicyBundle.from_content(
    "constant-allow",
    {
        "modules": {
            "tool_call.rego": "package baton.tool_call\n\nimport rego.v1\n\n"
            'decision := {"allow": true, "require_approval": false, "reasons": []}\n'
        }
    },
)


def inputs() -> list[dict]:
    documents = []
    for n in range(DECISIONS):
        documents.append(
            decision_input(
                "tool.call",
                run={
                    "id": f"run-{n}",
                    "workflow": "support_case_resolution",
                    "release_id": "rel_x",
                    "hop_count": n % 9,
                    "max_hops": 10,
                    "budget": {"tokens": 4000, "tool_calls": 20, "cost_usd": 1.0},
                    "spent": {"tokens": n % 3000, "tool_calls": n % 15, "cost_usd": (n % 50) / 100},
                    "now": 1_800_000_000 + n,
                    "deadline": 1_800_003_600,
                    "sensitivity": "confidential",
                },
                agent={
                    "slug": "case_manager",
                    "status": "active",
                    "data_classification": "confidential",
                    "allowed_tools": {"crm.get_case": "read", "crm.update_case": "irreversible"},
                },
                tool={
                    "name": "crm.update_case" if n % 2 else "crm.get_case",
                    "side_effect": "irreversible" if n % 2 else "read",
                    "external": False,
                },
                args={"case_id": f"CASE-{n}", "resolution": "refund approved"},
                facts={"amount": float(n % 900), "confidence": 0.5 + (n % 50) / 100},
            )
        )
    return documents


def main() -> int:
    bundle = shipped_default_bundle()
    engine = EmbeddedEngine()
    documents = inputs()
    accepts, validator = POINTS["tool.call"].accepts, POINTS["tool.call"].validator
    for document in documents[:200]:  # warm-up: compile the bundles, fill caches
        policy_evaluate("tool.call", document, bundle=bundle, engine=engine)
        policy_evaluate("tool.call", document, bundle=CONSTANT_ALLOW, engine=engine)
        validator.validate(document)

    baseline, reference, floor, decisions, denied = [], [], [], [], 0
    for document in documents:
        started = time.perf_counter()
        if not accepts(document):
            print("a bench input does not fit the schema", file=sys.stderr)
            return 1
        baseline.append(time.perf_counter() - started)
        started = time.perf_counter()
        validator.validate(document)
        reference.append(time.perf_counter() - started)
        started = time.perf_counter()
        policy_evaluate("tool.call", document, bundle=CONSTANT_ALLOW, engine=engine)
        floor.append(time.perf_counter() - started)
        started = time.perf_counter()
        decision = policy_evaluate("tool.call", document, bundle=bundle, engine=engine)
        decisions.append(time.perf_counter() - started)
        if decision.failure:
            print(f"unexpected failure: {decision.reasons}", file=sys.stderr)
            return 1
        denied += not decision.allow

    p99_us = percentile(decisions, 0.99) * 1e6
    ratio = percentile(decisions, 0.99) / percentile(baseline, 0.99)
    print(f"{DECISIONS} tool.call decisions, default bundle, embedded engine ({denied} denied)")
    print(describe("compiled schema check (baseline)", baseline))
    print(describe("jsonschema validate (reference)", reference))
    print(describe("constant-allow rule (engine floor)", floor))
    print(describe("policy decision", decisions))
    print(f"targets: p99 < {TARGET_P99_US} µs, ratio < {TARGET_RATIO}x")
    print(f"policy decision p99 {p99_us:.1f} µs = {ratio:.2f}x compiled JSON Schema check p99")
    return 0 if p99_us < TARGET_P99_US and ratio < TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
