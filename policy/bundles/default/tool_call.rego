# tool.call: may this agent, in this run, call this tool now, and must a human approve the
# call first?
#
# Least privilege: an agent calls only the tools listed in its allowed_tools, each with a
# scope at least as wide as the tool's side effect (read < write < irreversible).
package baton.tool_call

import rego.v1

import data.baton.lib

# Entrypoint baton/tool_call/decision; the default answers when there is no input at all.
default decision := {"allow": false, "require_approval": false, "reasons": ["no input document"]}

decision := decide(input)

# A granted call is allowed, with the approvals it needs. Any other call is refused with the
# reasons of the deny checks that fire; each of them contradicts `granted`, so they only run
# to explain a refusal.
decide(inp) := with_approvals(approvals(inp.tool, facts), facts) if {
	granted(inp)
	facts := given_facts(inp)
} else := lib.refused(denials(inp))

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

# Every fact it reads is present and says yes, so a missing or malformed fact never lets a
# call through.
granted(inp) := true if {
	agent := inp.agent
	tool := inp.tool
	run := inp.run
	agent.status == "active"
	lib.scope_covers(agent.allowed_tools[tool.name], tool.side_effect)
	not restricted_to_external(run, agent, tool)
	lib.within_limits(run)
} else := false

# Restricted data, the run's or the agent's, must not reach a tool that sends it outside.
restricted_to_external(run, agent, tool) if {
	tool.external == true
	restricted(run, agent)
}

restricted(run, _) if run.sensitivity == "restricted"

restricted(_, agent) if agent.data_classification == "restricted"

# --- Deny checks: each answers its reasons, [] when it does not fire -------------------------

# A call without a run, an agent and a tool has no check to explain its refusal.
denials(inp) := [reason |
	some reasons in [
		agent_not_active(agent),
		tool_not_allowed(agent, tool),
		scope_too_narrow(agent, tool),
		restricted_data_to_external_tool(run, agent, tool),
		lib.hop_limit_reached(run),
		lib.budget_exceeded(run),
		lib.deadline_passed(run),
	]
	some reason in reasons
] if {
	run := inp.run
	agent := inp.agent
	tool := inp.tool
} else := []

agent_not_active(agent) := [concat("", ["agent ", agent.slug, " is not active (status ", status, ")"])] if {
	status := agent.status
	not status == "active"
} else := []

tool_not_allowed(agent, tool) := [concat("", ["agent ", agent.slug, " may not call ", tool.name])] if {
	not agent.allowed_tools[tool.name]
} else := []

scope_too_narrow(agent, tool) := [concat("", [
	"agent ", agent.slug, " has ", scope, " scope on ", tool.name, ", which needs ", tool.side_effect,
])] if {
	scope := agent.allowed_tools[tool.name]
	not lib.scope_covers(scope, tool.side_effect)
} else := []

restricted_data_to_external_tool(run, agent, tool) := [concat("", [
	"restricted data may not flow to external tool ", tool.name,
])] if {
	restricted_to_external(run, agent, tool)
} else := []

# --- Approval checks: allowed, but only once a human agrees ----------------------------------

# Facts are optional: a deterministic step has none.
given_facts(inp) := facts if {
	facts := inp.facts
} else := {}

approvals(tool, facts) := [reason |
	some reasons in [irreversible(tool), over_threshold(facts), low_confidence(facts)]
	some reason in reasons
]

irreversible(tool) := [concat("", [tool.name, " is irreversible"])] if {
	tool.side_effect == "irreversible"
} else := []

over_threshold(facts) := [sprintf(
	"amount %v is over the approval threshold %v",
	[amount, amount_threshold],
)] if {
	amount := facts.amount
	is_number(amount)
	amount > amount_threshold
} else := []

low_confidence(facts) := [sprintf("confidence %v is below %v", [confidence, min_confidence])] if {
	confidence := facts.confidence
	is_number(confidence)
	confidence < min_confidence
} else := []

# Approval is asked only of a call policy allows: no reviewer can approve what policy refuses.
# A high-value call also needs the high-value group, and more than one approval.
with_approvals(reasons, facts) := lib.allowed if {
	reasons == []
} else := approval_request(reasons, high_value_approvers, high_value_quorum) if {
	amount := facts.amount
	is_number(amount)
	amount > high_value_amount
} else := approval_request(reasons, [default_group], 1)

approval_request(reasons, approvers, quorum) := {
	"allow": true,
	"require_approval": true,
	"reasons": sort(reasons),
	"approvers": approvers,
	"quorum": quorum,
}

high_value_approvers := lib.sorted({default_group, high_value_group})
