package baton.run_start_test

import rego.v1

import data.baton.lib
import data.baton.run_start

active_agents := [
	{"slug": "intake_classifier", "status": "active", "allowed_tools": {"kb_search": "read"}},
	{"slug": "case_manager", "status": "active", "allowed_tools": {"crm.update_case": "write"}},
]

workflow := {
	"name": "support_case_resolution",
	"release_id": "rel_0123456789abcdef",
	"channel": "production",
	"agents": active_agents,
}

task := {
	"case_id": "case_42",
	"sensitivity": "confidential",
	"budget": {"tokens": 20000, "tool_calls": 20, "cost_usd": 1.0},
	"deadline": null,
	"input": {"text": "Please refund order 1234"},
}

start(changes) := lib.merge(
	{
		"decision_point": "run.start",
		"version": 1,
		"subject": {"username": "ada", "roles": ["reviewer"], "kind": "user"},
		"workflow": workflow,
		"task": task,
	},
	changes,
)

decide_start(changes) := run_start.decide(start(changes))

with_agents(agents) := {"workflow": lib.merge(workflow, {"agents": agents})}

with_task(changes) := {"task": lib.merge(task, changes)}

ok := {"allow": true, "require_approval": false, "reasons": []}

refusal(reasons) := {"allow": false, "require_approval": false, "reasons": reasons}

test_entrypoint_is_always_defined_and_denies_without_input if {
	run_start.decision.allow == false
}

test_empty_input_denies if {
	run_start.decide({}).allow == false
}

test_missing_case_id_denies if {
	decide_start({"task": object.remove(task, ["case_id"])}) == refusal(["no rule allows this request"])
}

test_named_subject_with_active_agents_may_start if {
	decide_start({}) == ok
}

test_workflow_without_agents_may_start if {
	decide_start({"workflow": object.remove(workflow, ["agents"])}) == ok
}

test_blank_subject_is_denied if {
	reason := "a run must be started by a named subject"
	decide_start({"subject": {"username": " ", "roles": []}}) == refusal([reason])
}

test_missing_subject_is_denied if {
	decide_start({"subject": {"roles": []}}) == refusal(["a run must be started by a named subject"])
}

test_inactive_agents_are_named if {
	retired := lib.merge(active_agents[0], {"status": "retired"})
	draft := lib.merge(active_agents[1], {"status": "draft"})
	reason := "workflow agents are not active: case_manager (draft), intake_classifier (retired)"
	decide_start(with_agents([retired, draft])) == refusal([reason])
}

test_an_inactive_agent_is_named_once if {
	retired := lib.merge(active_agents[0], {"status": "retired"})
	reason := "workflow agents are not active: intake_classifier (retired)"
	decide_start(with_agents([retired, retired])) == refusal([reason])
}

test_agent_without_status_is_not_active if {
	unknown := object.remove(active_agents[1], ["status"])
	reason := "workflow agents are not active: case_manager (no status)"
	decide_start(with_agents([active_agents[0], unknown])) == refusal([reason])
}

test_restricted_task_is_denied_by_default if {
	run_start.restricted_runs_allowed == false
	reason := "the task's data is restricted, and runs on restricted data are not allowed"
	decide_start(with_task({"sensitivity": "restricted"})) == refusal([reason])
}

test_confidential_task_is_allowed if {
	decide_start(with_task({"sensitivity": "confidential"})) == ok
}

test_negative_budget_is_denied if {
	reason := "budget must not be negative: cost_usd -0.5, tokens -1"
	decide_start(with_task({"budget": {"tokens": -1, "cost_usd": -0.5, "tool_calls": 3}})) == refusal([reason])
}

test_zero_budget_is_allowed if {
	decide_start(with_task({"budget": {"tokens": 0}})) == ok
}

test_task_without_budget_is_allowed if {
	decide_start({"task": object.remove(task, ["budget"])}) == ok
}

test_positive_rule_refuses_without_every_fact if {
	run_start.granted(start({}))
	run_start.granted(start(with_agents("everyone"))) == false
	run_start.granted(start(with_task({"budget": {"tokens": "lots"}}))) == false
	run_start.granted(start({"workflow": object.remove(workflow, ["release_id"])})) == false
	run_start.granted({}) == false
}
