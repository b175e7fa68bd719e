package baton.step_transition_test

import rego.v1

import data.baton.lib
import data.baton.step_transition

run := {
	"id": "run_1",
	"workflow": "support_case_resolution",
	"hop_count": 3,
	"max_hops": 10,
	"budget": {"tokens": 20000, "tool_calls": 20, "cost_usd": 1.0},
	"spent": {"tokens": 1200, "tool_calls": 2, "cost_usd": 0.1},
	"now": 1767225600,
	"deadline": 1767229200,
}

# The triage step of support_case_resolution may hand over to retrieve or to a human.
transition(to, changes) := lib.merge(
	{
		"decision_point": "step.transition",
		"version": 1,
		"run": run,
		"from": "triage",
		"to": to,
		"allowed_next": ["retrieve", "human"],
		"proposed_by": "intake_classifier",
	},
	changes,
)

with_run(changes) := {"run": lib.merge(run, changes)}

allowed(d) if {
	d.allow == true
	d.require_approval == false
	d.reasons == []
}

test_empty_input_denies if {
	d := step_transition.decide({})
	d.allow == false
	d.reasons == ["incomplete input: missing allowed_next, decision_point, from, run, to, version"]
}

test_entrypoint_is_always_defined_and_denies_without_input if {
	step_transition.decision.allow == false
}

test_missing_allowed_next_denies if {
	d := step_transition.decide(object.remove(transition("retrieve", {}), ["allowed_next"]))
	d.allow == false
	d.reasons == ["incomplete input: missing allowed_next"]
}

test_declared_transition_is_allowed if {
	allowed(step_transition.decide(transition("retrieve", {})))
}

test_escalation_to_a_human_is_allowed_when_declared if {
	allowed(step_transition.decide(transition("human", {})))
}

test_invented_branch_is_denied if {
	d := step_transition.decide(transition("refund_now", {}))
	d.allow == false
	d.require_approval == false
	d.reasons == ["transition triage -> refund_now is not in the workflow"]
}

test_step_without_next_states_goes_nowhere if {
	d := step_transition.decide(transition("end", {"from": "commit", "allowed_next": []}))
	d.allow == false
	d.reasons == ["transition commit -> end is not in the workflow"]
}

test_hop_limit_reached_is_denied if {
	d := step_transition.decide(transition("retrieve", with_run({"hop_count": 10})))
	d.allow == false
	d.reasons == ["hop limit 10 reached"]
}

test_hop_below_limit_is_allowed if {
	allowed(step_transition.decide(transition("retrieve", with_run({"hop_count": 9}))))
}

test_budget_exceeded_is_denied if {
	d := step_transition.decide(transition("retrieve", with_run({"spent": {"tokens": 25000}})))
	d.allow == false
	d.reasons == ["budget exceeded: tokens 25000 > 20000"]
}

test_budget_spent_exactly_is_allowed if {
	allowed(step_transition.decide(transition("retrieve", with_run({"spent": {"cost_usd": 1.0}}))))
}

test_deadline_passed_is_denied if {
	d := step_transition.decide(transition("retrieve", with_run({"now": 1767229201})))
	d.allow == false
	d.reasons == ["deadline passed"]
}

test_deadline_not_yet_passed_is_allowed if {
	allowed(step_transition.decide(transition("retrieve", with_run({"now": 1767229200}))))
}

test_invented_branch_past_the_hop_limit_reports_both if {
	d := step_transition.decide(transition("refund_now", with_run({"hop_count": 10})))
	d.allow == false
	d.reasons == ["hop limit 10 reached", "transition triage -> refund_now is not in the workflow"]
}

test_positive_rule_refuses_invented_branches_and_exhausted_runs if {
	step_transition.granted(transition("retrieve", {}))
	step_transition.granted(transition("refund_now", {})) == false
	step_transition.granted(transition("retrieve", with_run({"deadline": 1}))) == false
	step_transition.granted(object.remove(transition("retrieve", {}), ["run"])) == false
}

test_input_for_another_decision_point_is_denied if {
	d := step_transition.decide(transition("retrieve", {"decision_point": "tool.call"}))
	d.allow == false
	d.reasons == ["input is for tool.call, not step.transition"]
}

test_unsupported_input_version_is_denied if {
	d := step_transition.decide(transition("retrieve", {"version": 0}))
	d.allow == false
	d.reasons == ["input version 0 is not supported"]
}
