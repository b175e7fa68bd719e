# run.start: may this subject start a run of this workflow release on this task?
package baton.run_start

import rego.v1

import data.baton.lib

# Entrypoint baton/run_start/decision (the default answers when there is no input at all).
default decision := {"allow": false, "require_approval": false, "reasons": ["no input document"]}

decision := decide(input)

decide(inp) := lib.decision(granted(inp), denials) if {
	denials := {msg | some check in deny_checks; msg := deny(check, inp)}
}

# --- Settings (data.baton.runs) --------------------------------------------------------------

# (No data section shares a package's path, so that an OPA server can take the data without
# it covering a policy package.)
default restricted_runs_allowed := false

restricted_runs_allowed := data.baton.runs.allow_restricted

# --- The positive rule -----------------------------------------------------------------------

granted(inp) := true if {
	lib.envelope_ok(inp, "run.start")
	lib.non_empty(inp.subject.username)
	is_string(inp.workflow.name)
	is_string(inp.workflow.release_id)
	is_string(inp.task.case_id)
	is_array(agents(inp))
	every agent in agents(inp) {
		agent.status == "active"
	}
	not restricted_refused(inp)
	is_object(budget(inp))
	every amount in budget(inp) {
		is_number(amount)
		amount >= 0
	}
} else := false

required_paths := {
	["subject", "username"],
	["workflow", "name"],
	["workflow", "release_id"],
	["task", "case_id"],
} | lib.envelope_paths

# A workflow without agents (tools and human gates only) has none to check.
agents(inp) := lib.get(inp, ["workflow", "agents"], [])

# A task without a budget runs under the workflow's limits.
budget(inp) := lib.get(inp, ["task", "budget"], {})

restricted_refused(inp) if {
	inp.task.sensitivity == "restricted"
	restricted_runs_allowed != true
}

# --- Deny checks -----------------------------------------------------------------------------

deny_checks := [
	"incomplete_input",
	"wrong_decision_point",
	"unsupported_version",
	"no_subject",
	"inactive_agents",
	"restricted_data",
	"negative_budget",
]

deny("incomplete_input", inp) := lib.incomplete(inp, required_paths)

deny("wrong_decision_point", inp) := lib.wrong_point_reason(inp, "run.start")

deny("unsupported_version", inp) := lib.version_reason(inp)

# Present but blank (a missing username is incomplete input).
deny("no_subject", inp) := "a run must be started by a named subject" if {
	lib.has_path(inp, ["subject", "username"])
	not lib.non_empty(inp.subject.username)
}

# Names every agent that is not active, with its status.
deny("inactive_agents", inp) := msg if {
	inactive := {lib.message([slug, " (", status, ")"]) |
		some agent in agents(inp)
		slug := lib.get(agent, ["slug"], "(no slug)")
		status := lib.get(agent, ["status"], "no status")
		status != "active"
	}
	count(inactive) > 0
	msg := lib.message(["workflow agents are not active: ", lib.join(", ", lib.sorted(inactive))])
}

deny("restricted_data", inp) := msg if {
	restricted_refused(inp)
	msg := "the task's data is restricted, and runs on restricted data are not allowed"
}

deny("negative_budget", inp) := msg if {
	negative := {lib.message([key, " ", amount]) |
		some key
		amount := budget(inp)[key]
		is_number(amount)
		amount < 0
	}
	count(negative) > 0
	msg := lib.message(["budget must not be negative: ", lib.join(", ", lib.sorted(negative))])
}
