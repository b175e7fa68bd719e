"""Small bundles for engine tests: every decision point answers, and one rule is under test."""

from policy.bundles import PolicyBundle
from policy.decision_points import POINTS

ALLOW = '{"allow": true, "require_approval": false, "reasons": []}'


def bundle(
    tool_call_rule: str = f"decision := {ALLOW}", data: dict | None = None, name: str = "test"
) -> PolicyBundle:
    """A bundle whose tool.call decision is `tool_call_rule`; the other points allow."""
    modules = {}
    for point in POINTS.values():
        package = ".".join(point.entrypoint.split("/")[:-1])
        rule = tool_call_rule if point.name == "tool.call" else f"decision := {ALLOW}"
        modules[f"{package}.rego"] = f"package {package}\n\nimport rego.v1\n\n{rule}\n"
    return PolicyBundle.from_content(name, {"modules": modules, "data": data or {}})
