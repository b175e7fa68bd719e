# tool.call: may this agent, in this run, call this tool now, and must a human approve the
# call first?
#
# Least privilege: an agent calls only the tools listed in its allowed_tools, each with a
# scope at least as wide as the tool's side effect (read < write < irreversible).
package baton.tool_call

import rego.v1

import data.baton.lib

# Entrypoint baton/tool_call/decision. decide() answers for any object, however incomplete;
# the default answers when there is no input document at all.
default decision := {"allow": false, "require_approval": false, "reasons": ["no input document"]}

decision := decide(input)

decide(inp) := lib.approval_decision(granted(inp), denials, approvals, approvers(inp), quorum(inp)) if {
	denials := {msg | some check in deny_checks; msg := deny(check, inp)}
	approvals := {msg | some check in approval_checks; msg := approval(check, inp)}
}

# --- Settings (data.baton.approval), with their defaults -------------------------------------

default amount_threshold := 500

amount_threshold := data.baton.approval.amount_threshold

default min_confidence := 0.85

min_confidence := data.baton.approval.min_confidence

default default_group := "reviewer"

default_group := data.baton.approval.default_group

default high_value_amount := 5000

high_value_amount := data.baton.approval.high_value_amount

default high_value_group := "platform"

high_value_group := data.baton.approval.high_value_group

default high_value_quorum := 2

high_value_quorum := data.baton.approval.high_value_quorum

# --- The positive rule -----------------------------------------------------------------------

# Every fact is present and says yes. The deny checks explain a refusal, but this rule alone
# lets a call go ahead, so a fact that is missing (and a check that therefore cannot even
# word its message) never lets one through.
granted(inp) := true if {
	lib.envelope_ok(inp, "tool.call")
	inp.agent.status == "active"
	scope := inp.agent.allowed_tools[inp.tool.name]
	lib.scope_covers(scope, inp.tool.side_effect)
	not restricted_to_external(inp)
	lib.within_limits(inp.run)
} else := false

required_paths := {
	["agent", "slug"],
	["agent", "status"],
	["agent", "allowed_tools"],
	["tool", "name"],
	["tool", "side_effect"],
} | lib.run_paths | lib.envelope_paths

# --- Deny checks -----------------------------------------------------------------------------

deny_checks := [
	"incomplete_input",
	"wrong_decision_point",
	"unsupported_version",
	"agent_not_active",
	"tool_not_allowed",
	"scope_too_narrow",
	"restricted_data_to_external_tool",
	"hop_limit",
	"budget",
	"deadline",
]

deny("incomplete_input", inp) := lib.incomplete(inp, required_paths)

deny("wrong_decision_point", inp) := lib.wrong_point_reason(inp, "tool.call")

deny("unsupported_version", inp) := lib.version_reason(inp)

deny("agent_not_active", inp) := msg if {
	inp.agent.status != "active"
	msg := lib.message(["agent ", inp.agent.slug, " is not active (status ", inp.agent.status, ")"])
}

deny("tool_not_allowed", inp) := msg if {
	is_object(inp.agent.allowed_tools)
	not inp.tool.name in object.keys(inp.agent.allowed_tools)
	msg := lib.message(["agent ", inp.agent.slug, " may not call ", inp.tool.name])
}

deny("scope_too_narrow", inp) := msg if {
	scope := inp.agent.allowed_tools[inp.tool.name]
	not lib.scope_covers(scope, inp.tool.side_effect)
	msg := lib.message([
		"agent ",
		inp.agent.slug,
		" has ",
		scope,
		" scope on ",
		inp.tool.name,
		", which needs ",
		inp.tool.side_effect,
	])
}

deny("restricted_data_to_external_tool", inp) := msg if {
	restricted_to_external(inp)
	msg := lib.message(["restricted data may not flow to external tool ", inp.tool.name])
}

deny("hop_limit", inp) := lib.hop_limit_reason(inp.run)

deny("budget", inp) := lib.budget_reason(inp.run)

deny("deadline", inp) := lib.deadline_reason(inp.run)

# Restricted data, the run's or the agent's, must not reach a tool that sends it outside.
restricted_to_external(inp) if {
	inp.tool.external == true
	restricted(inp)
}

restricted(inp) if inp.run.sensitivity == "restricted"

restricted(inp) if inp.agent.data_classification == "restricted"

# --- Approval checks: allowed, but only once a human agrees ----------------------------------

approval_checks := ["irreversible", "amount", "confidence"]

approval("irreversible", inp) := lib.message([inp.tool.name, " is irreversible"]) if {
	inp.tool.side_effect == "irreversible"
}

approval("amount", inp) := msg if {
	amount := inp.facts.amount
	is_number(amount)
	amount > amount_threshold
	msg := lib.message(["amount ", amount, " is over the approval threshold ", amount_threshold])
}

# Facts without a confidence (a deterministic step) need no approval for it.
approval("confidence", inp) := msg if {
	confidence := inp.facts.confidence
	is_number(confidence)
	confidence < min_confidence
	msg := lib.message(["confidence ", confidence, " is below ", min_confidence])
}

# A high-value action also needs the high-value group, and more than one approver.
high_value(inp) if {
	is_number(inp.facts.amount)
	inp.facts.amount > high_value_amount
}

approvers(inp) := {default_group, high_value_group} if high_value(inp) else := {default_group}

quorum(inp) := high_value_quorum if high_value(inp) else := 1
