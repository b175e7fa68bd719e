package baton.run_start_test

import rego.v1

import data.baton.lib
import data.baton.run_start

agents := [
	{
		"slug": "intake_classifier",
		"status": "active",
		"data_classification": "confidential",
		"allowed_tools": {"kb_search": "read"},
	},
	{
		"slug": "case_manager",
		"status": "active",
		"data_classification": "confidential",
		"allowed_tools": {"crm.update_case": "write"},
	},
]

workflow := {
	"name": "support_case_resolution",
	"release_id": "rel_0123456789abcdef",
	"channel": "production",
	"agents": agents,
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

allowed(d) if {
	d.allow == true
	d.require_approval == false
	d.reasons == []
}

test_empty_input_denies if {
	d := run_start.decide({})
	d.allow == false
	d.reasons == ["incomplete input: missing decision_point, subject, task, version, workflow"]
}

test_entrypoint_is_always_defined_and_denies_without_input if {
	run_start.decision.allow == false
}

test_missing_case_id_denies if {
	d := run_start.decide(start({"task": object.remove(task, ["case_id"])}))
	d.allow == false
	d.reasons == ["incomplete input: missing task.case_id"]
}

test_named_subject_with_active_agents_may_start if {
	allowed(run_start.decide(start({})))
}

test_workflow_without_agents_may_start if {
	allowed(run_start.decide(start({"workflow": object.remove(workflow, ["agents"])})))
}

test_blank_subject_is_denied if {
	d := run_start.decide(start({"subject": {"username": " ", "roles": []}}))
	d.allow == false
	d.reasons == ["a run must be started by a named subject"]
}

test_missing_subject_is_denied if {
	d := run_start.decide(start({"subject": {"roles": []}}))
	d.allow == false
	d.reasons == ["incomplete input: missing subject.username"]
}

test_inactive_agents_are_named if {
	retired := lib.merge(agents[0], {"status": "retired"})
	draft := lib.merge(agents[1], {"status": "draft"})
	d := run_start.decide(start({"workflow": lib.merge(workflow, {"agents": [retired, draft]})}))
	d.allow == false
	d.reasons == ["workflow agents are not active: case_manager (draft), intake_classifier (retired)"]
}

test_agent_without_status_is_not_active if {
	unknown := object.remove(agents[1], ["status"])
	d := run_start.decide(start({"workflow": lib.merge(workflow, {"agents": [agents[0], unknown]})}))
	d.allow == false
	d.reasons == ["workflow agents are not active: case_manager (no status)"]
}

test_restricted_task_is_denied_by_default if {
	run_start.restricted_runs_allowed == false
	d := run_start.decide(start({"task": lib.merge(task, {"sensitivity": "restricted"})}))
	d.allow == false
	d.reasons == ["the task's data is restricted, and runs on restricted data are not allowed"]
}

test_confidential_task_is_allowed if {
	allowed(run_start.decide(start({"task": lib.merge(task, {"sensitivity": "confidential"})})))
}

test_negative_budget_is_denied if {
	overdrawn := {"tokens": -1, "cost_usd": -0.5, "tool_calls": 3}
	d := run_start.decide(start({"task": lib.merge(task, {"budget": overdrawn})}))
	d.allow == false
	d.reasons == ["budget must not be negative: cost_usd -0.5, tokens -1"]
}

test_zero_budget_is_allowed if {
	allowed(run_start.decide(start({"task": lib.merge(task, {"budget": {"tokens": 0}})})))
}

test_task_without_budget_is_allowed if {
	allowed(run_start.decide(start({"task": object.remove(task, ["budget"])})))
}

test_positive_rule_refuses_what_the_deny_checks_explain if {
	run_start.granted(start({}))
	run_start.granted(start({"subject": {"username": "", "roles": []}})) == false
	no_status := {"slug": "x", "allowed_tools": {}}
	run_start.granted(start({"workflow": lib.merge(workflow, {"agents": [no_status]})})) == false
	run_start.granted(start({"task": lib.merge(task, {"sensitivity": "restricted"})})) == false
	run_start.granted(start({"task": lib.merge(task, {"budget": {"tokens": -1}})})) == false
	run_start.granted(start({"task": lib.merge(task, {"budget": 100})})) == false
	run_start.granted(start({"workflow": lib.merge(workflow, {"agents": "everyone"})})) == false
	run_start.granted({}) == false
}

test_input_for_another_decision_point_is_denied if {
	d := run_start.decide(start({"decision_point": "tool.call"}))
	d.allow == false
	d.reasons == ["input is for tool.call, not run.start"]
}

test_unsupported_input_version_is_denied if {
	d := run_start.decide(start({"version": 2}))
	d.allow == false
	d.reasons == ["input version 2 is not supported"]
}
