# agent.lifecycle: may this actor move this agent to another status?
#
# An agent goes live only when someone owns it, a runbook says how to operate it and SLOs
# say what good looks like. Retirement needs a reason, and it is final.
package baton.agent_lifecycle

import rego.v1

import data.baton.lib

# Entrypoint baton/agent_lifecycle/decision (the default answers when there is no input).
default decision := {"allow": false, "require_approval": false, "reasons": ["no input document"]}

decision := decide(input)

decide(inp) := lib.decision(granted(inp), denials) if {
	denials := {msg | some check in deny_checks; msg := deny(check, inp)}
}

# --- Settings (data.baton.lifecycle) ---------------------------------------------------------

default actor_roles := ["platform", "admin"]

actor_roles := data.baton.lifecycle.actor_roles

statuses := {"draft", "active", "deprecated", "retired"}

# What an agent needs before it may become active, and how a refusal names its lack.
readiness := {"has_owner": "no owner", "has_runbook": "no runbook", "has_slos": "no SLOs"}

# --- The positive rule -----------------------------------------------------------------------

granted(inp) := true if {
	lib.envelope_ok(inp, "agent.lifecycle")
	lib.non_empty(inp.actor.username)
	actor_may_manage(inp)
	is_string(inp.agent.slug)
	inp.to in statuses
	not leaves_retirement(inp)
	count(missing_readiness(inp)) == 0
	not retired_without_reason(inp)
} else := false

required_paths := {
	["agent", "slug"],
	["agent", "status"],
	["to"],
	["actor", "username"],
	["actor", "roles"],
} | lib.envelope_paths

actor_may_manage(inp) if {
	some role in inp.actor.roles
	role in actor_roles
}

leaves_retirement(inp) if {
	inp.agent.status == "retired"
	inp.to != "retired"
}

# The readiness facts an agent lacks to become active (none for any other status).
missing_readiness(inp) := {fact |
	inp.to == "active"
	some fact in object.keys(readiness)
	lib.get(inp, ["agent", fact], false) != true
}

retired_without_reason(inp) if {
	inp.to == "retired"
	not lib.non_empty(lib.get(inp, ["reason"], ""))
}

# --- Deny checks -----------------------------------------------------------------------------

deny_checks := [
	"incomplete_input",
	"wrong_decision_point",
	"unsupported_version",
	"actor_role",
	"unknown_status",
	"leaves_retirement",
	"not_ready",
	"no_reason",
]

deny("incomplete_input", inp) := lib.incomplete(inp, required_paths)

deny("wrong_decision_point", inp) := lib.wrong_point_reason(inp, "agent.lifecycle")

deny("unsupported_version", inp) := lib.version_reason(inp)

deny("actor_role", inp) := msg if {
	lib.has_path(inp, ["actor", "roles"])
	not actor_may_manage(inp)
	roles := lib.join(" or ", actor_roles)
	what := " to change an agent's lifecycle"
	msg := lib.message(["actor ", inp.actor.username, " needs role ", roles, what])
}

deny("unknown_status", inp) := msg if {
	lib.has_path(inp, ["to"])
	not inp.to in statuses
	msg := lib.message(["unknown status ", inp.to, ": one of ", lib.join(", ", lib.sorted(statuses))])
}

deny("leaves_retirement", inp) := msg if {
	leaves_retirement(inp)
	msg := lib.message(["agent ", inp.agent.slug, " is retired and cannot become ", inp.to])
}

deny("not_ready", inp) := msg if {
	lacking := [readiness[fact] | some fact in lib.sorted(missing_readiness(inp))]
	count(lacking) > 0
	msg := lib.message(["agent ", inp.agent.slug, " cannot become active: ", lib.join(", ", lacking)])
}

deny("no_reason", inp) := msg if {
	retired_without_reason(inp)
	msg := lib.message(["retiring agent ", inp.agent.slug, " needs a reason"])
}
