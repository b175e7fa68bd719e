# approval.decide: may this reviewer approve (or reject) this approval request?
#
# Separation of duties: neither the person who asked nor the agent that acts may decide; only
# a member of the request's approver group may, and only with clearance for its data. A reject
# is held to the same identity rules as an approve.
package baton.approval_decide

import rego.v1

import data.baton.lib

# Entrypoint baton/approval_decide/decision; the default answers when there is no input.
default decision := {"allow": false, "require_approval": false, "reasons": ["no input document"]}

decision := decide(input)

decide(inp) := lib.allowed if granted(inp) else := lib.refused(denials(inp))

granted(inp) := true if {
	reviewer := inp.reviewer
	request := inp.request
	name := reviewer.username
	lib.non_empty(name)
	known_decision(inp.decision)
	requester := request.requested_by
	is_string(requester)
	not name == requester
	agent := request.agent
	is_string(agent)
	not is_the_agent(name, agent)
	request.approver_group in reviewer.groups
	lib.clearance_covers(clearance(reviewer), sensitivity(request))
} else := false

known_decision(verdict) if verdict == "approve"

known_decision(verdict) if verdict == "reject"

# An agent acts under its own service identity, "agent.<slug>".
is_the_agent(name, agent) if name == agent

is_the_agent(name, agent) if name == concat("", ["agent.", agent])

# A reviewer without a recorded clearance is cleared for internal data, the default
# classification; a request without a sensitivity is taken to hold internal data too.
clearance(reviewer) := level if {
	level := reviewer.clearance
} else := "internal"

sensitivity(request) := level if {
	level := request.sensitivity
} else := "internal"

# --- Deny checks: each answers its reasons, [] when it does not fire -------------------------

denials(inp) := [reason |
	some reasons in [
		unknown_decision(inp),
		requester_decides(inp),
		agent_decides(inp),
		not_in_approver_group(inp),
		clearance_too_low(inp),
	]
	some reason in reasons
]

unknown_decision(inp) := ["the decision must be approve or reject"] if {
	not known_decision(inp.decision)
} else := []

requester_decides(inp) := [concat("", ["requester cannot ", inp.decision, " their own request"])] if {
	inp.reviewer.username == inp.request.requested_by
} else := []

agent_decides(inp) := [concat("", ["the agent cannot ", inp.decision, " its own action"])] if {
	is_the_agent(inp.reviewer.username, inp.request.agent)
} else := []

not_in_approver_group(inp) := [concat("", [
	"reviewer ", inp.reviewer.username, " is not in the approver group ", group,
])] if {
	group := inp.request.approver_group
	groups := inp.reviewer.groups
	not group in groups
} else := []

clearance_too_low(inp) := [concat("", [
	"reviewer ", inp.reviewer.username, " is cleared for ", level,
	" data, and the request holds ", held, " data",
])] if {
	level := clearance(inp.reviewer)
	held := sensitivity(inp.request)
	not lib.clearance_covers(level, held)
} else := []
