# run.start: may this subject start a run of this workflow release on this task?
package baton.run_start

import rego.v1

import data.baton.lib

# Entrypoint baton/run_start/decision; the default answers when there is no input at all.
default decision := {"allow": false, "require_approval": false, "reasons": ["no input document"]}

decision := decide(input)

decide(inp) := lib.allowed if granted(inp) else := lib.refused(denials(inp))

# --- Settings (data.baton.runs) --------------------------------------------------------------

default restricted_runs_allowed := false

restricted_runs_allowed := data.baton.runs.allow_restricted

# --- The positive rule -----------------------------------------------------------------------

granted(inp) := true if {
	lib.non_empty(inp.subject.username)
	workflow := inp.workflow
	is_string(workflow.name)
	is_string(workflow.release_id)
	task := inp.task
	is_string(task.case_id)
	agents := workflow_agents(inp)
	is_array(agents)
	every agent in agents {
		agent.status == "active"
	}
	not restricted_refused(task)
	budget := task_budget(inp)
	is_object(budget)
	every amount in budget {
		is_number(amount)
		amount >= 0
	}
} else := false

# A workflow without agents (tools and human gates only) has none to check.
workflow_agents(inp) := agents if {
	agents := inp.workflow.agents
} else := []

# A task without a budget runs under the workflow's limits.
task_budget(inp) := budget if {
	budget := inp.task.budget
} else := {}

restricted_refused(task) if {
	task.sensitivity == "restricted"
	not restricted_runs_allowed == true
}

# --- Deny checks: each answers its reasons, [] when it does not fire -------------------------

denials(inp) := [reason |
	some reasons in [no_subject(inp), inactive_agents(inp), restricted_data(inp), negative_budget(inp)]
	some reason in reasons
]

no_subject(inp) := ["a run must be started by a named subject"] if {
	not lib.non_empty(inp.subject.username)
} else := []

# Names every agent that is not active, with its status (once).
inactive_agents(inp) := [concat("", [
	"workflow agents are not active: ", concat(", ", lib.sorted(inactive)),
])] if {
	inactive := {concat("", [lib.get(agent, "slug", "(no slug)"), " (", status, ")"]) |
		some agent in workflow_agents(inp)
		status := lib.get(agent, "status", "no status")
		not status == "active"
	}
	not inactive == set()
} else := []

restricted_data(inp) := ["the task's data is restricted, and runs on restricted data are not allowed"] if {
	restricted_refused(inp.task)
} else := []

negative_budget(inp) := [concat("", ["budget must not be negative: ", concat(", ", sort(negative))])] if {
	budget := task_budget(inp)
	negative := [concat("", [key, sprintf(" %v", [amount])]) |
		some key
		amount := budget[key]
		amount < 0
	]
	not negative == []
} else := []
