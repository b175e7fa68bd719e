# approval.decide: may this reviewer approve (or reject) this approval request?
#
# Separation of duties: neither the person who asked nor the agent that acts may decide; only
# a member of the request's approver group may, and only with clearance for its data. A reject
# is held to the same identity rules as an approve.
package baton.approval_decide

import rego.v1

import data.baton.lib

# Entrypoint baton/approval_decide/decision (the default answers when there is no input).
default decision := {"allow": false, "require_approval": false, "reasons": ["no input document"]}

decision := decide(input)

decide(inp) := lib.decision(granted(inp), denials) if {
	denials := {msg | some check in deny_checks; msg := deny(check, inp)}
}

granted(inp) := true if {
	lib.envelope_ok(inp, "approval.decide")
	lib.non_empty(inp.reviewer.username)
	inp.decision in {"approve", "reject"}
	is_string(inp.request.requested_by)
	inp.reviewer.username != inp.request.requested_by
	is_string(inp.request.agent)
	not is_the_agent(inp)
	inp.request.approver_group in inp.reviewer.groups
	lib.clearance_covers(clearance(inp), sensitivity(inp))
} else := false

required_paths := {
	["reviewer", "username"],
	["reviewer", "groups"],
	["request", "requested_by"],
	["request", "agent"],
	["request", "approver_group"],
	["decision"],
} | lib.envelope_paths

# An agent acts under its own service identity, "agent.<slug>".
is_the_agent(inp) if inp.reviewer.username == inp.request.agent

is_the_agent(inp) if {
	is_string(inp.request.agent)
	inp.reviewer.username == concat("", ["agent.", inp.request.agent])
}

# A reviewer without a recorded clearance is cleared for internal data, the default
# classification; a request without a sensitivity is taken to hold internal data too.
clearance(inp) := lib.get(inp, ["reviewer", "clearance"], "internal")

sensitivity(inp) := lib.get(inp, ["request", "sensitivity"], "internal")

deny_checks := [
	"incomplete_input",
	"wrong_decision_point",
	"unsupported_version",
	"unknown_decision",
	"requester_decides",
	"agent_decides",
	"not_in_approver_group",
	"clearance_too_low",
]

deny("incomplete_input", inp) := lib.incomplete(inp, required_paths)

deny("wrong_decision_point", inp) := lib.wrong_point_reason(inp, "approval.decide")

deny("unsupported_version", inp) := lib.version_reason(inp)

deny("unknown_decision", inp) := "the decision must be approve or reject" if {
	lib.has_path(inp, ["decision"])
	not inp.decision in {"approve", "reject"}
}

deny("requester_decides", inp) := msg if {
	inp.reviewer.username == inp.request.requested_by
	msg := lib.message(["requester cannot ", inp.decision, " their own request"])
}

deny("agent_decides", inp) := msg if {
	is_the_agent(inp)
	msg := lib.message(["the agent cannot ", inp.decision, " its own action"])
}

deny("not_in_approver_group", inp) := msg if {
	is_array(inp.reviewer.groups)
	not inp.request.approver_group in inp.reviewer.groups
	msg := lib.message([
		"reviewer ",
		inp.reviewer.username,
		" is not in the approver group ",
		inp.request.approver_group,
	])
}

deny("clearance_too_low", inp) := msg if {
	not lib.clearance_covers(clearance(inp), sensitivity(inp))
	msg := lib.message([
		"reviewer ",
		inp.reviewer.username,
		" is cleared for ",
		clearance(inp),
		" data, and the request holds ",
		sensitivity(inp),
		" data",
	])
}
