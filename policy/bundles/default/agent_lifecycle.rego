# agent.lifecycle: may this actor move this agent to another status?
#
# An agent goes live only when someone owns it, a runbook says how to operate it and SLOs
# say what good looks like. Retirement needs a reason, and it is final.
package baton.agent_lifecycle

import rego.v1

import data.baton.lib

# Entrypoint baton/agent_lifecycle/decision; the default answers when there is no input.
default decision := {"allow": false, "require_approval": false, "reasons": ["no input document"]}

decision := decide(input)

decide(inp) := lib.allowed if granted(inp) else := lib.refused(denials(inp))

# --- Settings (data.baton.lifecycle) ---------------------------------------------------------

default actor_roles := ["platform", "admin"]

actor_roles := data.baton.lifecycle.actor_roles

statuses := {"draft", "active", "deprecated", "retired"}

# --- The positive rule -----------------------------------------------------------------------

granted(inp) := true if {
	actor := inp.actor
	lib.non_empty(actor.username)
	may_manage(actor)
	agent := inp.agent
	is_string(agent.slug)
	to := inp.to
	statuses[to]
	not leaves_retirement(agent, to)
	ready(agent, to)
	not retired_without_reason(inp)
} else := false

may_manage(actor) if {
	some role in actor.roles
	role in actor_roles
}

leaves_retirement(agent, to) if {
	agent.status == "retired"
	not to == "retired"
}

# To become active, an agent needs an owner, a runbook and SLOs; any other status needs none.
ready(_, to) if not to == "active"

ready(agent, to) if {
	to == "active"
	agent.has_owner == true
	agent.has_runbook == true
	agent.has_slos == true
}

retired_without_reason(inp) if {
	inp.to == "retired"
	not lib.non_empty(inp.reason)
}

# --- Deny checks: each answers its reasons, [] when it does not fire -------------------------

denials(inp) := [reason |
	some reasons in [
		actor_role(inp),
		unknown_status(inp),
		leaves_retired_status(inp),
		not_ready(inp),
		no_reason(inp),
	]
	some reason in reasons
]

actor_role(inp) := [concat("", [
	"actor ", actor.username, " needs role ", concat(" or ", actor_roles), " to change an agent's lifecycle",
])] if {
	actor := inp.actor
	not may_manage(actor)
} else := []

unknown_status(inp) := [concat("", [
	"unknown status ", to, ": one of ", concat(", ", lib.sorted(statuses)),
])] if {
	to := inp.to
	not statuses[to]
} else := []

leaves_retired_status(inp) := [concat("", [
	"agent ", agent.slug, " is retired and cannot become ", inp.to,
])] if {
	agent := inp.agent
	leaves_retirement(agent, inp.to)
} else := []

# What an agent needs to become active, and how a refusal names its lack, in this order.
readiness := [
	{"fact": "has_owner", "lack": "no owner"},
	{"fact": "has_runbook", "lack": "no runbook"},
	{"fact": "has_slos", "lack": "no SLOs"},
]

not_ready(inp) := [concat("", ["agent ", agent.slug, " cannot become active: ", concat(", ", lacking)])] if {
	inp.to == "active"
	agent := inp.agent
	lacking := [need.lack | some need in readiness; not agent[need.fact] == true]
	not lacking == []
} else := []

no_reason(inp) := [concat("", ["retiring agent ", inp.agent.slug, " needs a reason"])] if {
	retired_without_reason(inp)
} else := []
