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

decide_transition(to, changes) := step_transition.decide(transition(to, changes))

with_run(changes) := {"run": lib.merge(run, changes)}

ok := {"allow": true, "require_approval": false, "reasons": []}

refusal(reasons) := {"allow": false, "require_approval": false, "reasons": reasons}

test_entrypoint_is_always_defined_and_denies_without_input if {
	step_transition.decision.allow == false
}

test_empty_input_denies if {
	step_transition.decide({}) == refusal(["no rule allows this request"])
}

test_missing_allowed_next_denies if {
	step_transition.decide(object.remove(transition("retrieve", {}), ["allowed_next"])).allow == false
}

test_missing_run_denies if {
	step_transition.decide(object.remove(transition("retrieve", {}), ["run"])).allow == false
}

test_declared_transition_is_allowed if {
	decide_transition("retrieve", {}) == ok
	decide_transition("human", {}) == ok
}

test_invented_branch_is_denied if {
	decide_transition("refund_now", {}) == refusal(["transition triage -> refund_now is not in the workflow"])
}

test_step_without_next_states_goes_nowhere if {
	d := decide_transition("end", {"from": "commit", "allowed_next": []})
	d == refusal(["transition commit -> end is not in the workflow"])
}

test_hop_limit_reached_is_denied if {
	decide_transition("retrieve", with_run({"hop_count": 10})) == refusal(["hop limit 10 reached"])
}

test_hop_below_limit_is_allowed if {
	decide_transition("retrieve", with_run({"hop_count": 9})) == ok
}

test_budget_exceeded_is_denied if {
	reason := "budget exceeded: tokens 25000 > 20000"
	decide_transition("retrieve", with_run({"spent": {"tokens": 25000}})) == refusal([reason])
}

test_budget_spent_exactly_is_allowed if {
	decide_transition("retrieve", with_run({"spent": {"cost_usd": 1.0}})) == ok
}

test_deadline_passed_is_denied if {
	decide_transition("retrieve", with_run({"now": 1767229201})) == refusal(["deadline passed"])
}

test_deadline_not_yet_passed_is_allowed if {
	decide_transition("retrieve", with_run({"now": 1767229200})) == ok
}

test_invented_branch_past_the_hop_limit_reports_both if {
	d := decide_transition("refund_now", with_run({"hop_count": 10}))
	d == refusal(["hop limit 10 reached", "transition triage -> refund_now is not in the workflow"])
}

test_positive_rule_refuses_without_every_fact if {
	step_transition.granted(transition("retrieve", {}))
	step_transition.granted(transition("retrieve", {"allowed_next": "retrieve"})) == false
	step_transition.granted(object.remove(transition("retrieve", {}), ["from"])) == false
	step_transition.granted({}) == false
}
