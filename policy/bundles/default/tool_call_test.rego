package baton.tool_call_test

import rego.v1

import data.baton.lib
import data.baton.tool_call

# --- Fixtures: a case manager agent in a run well within its limits --------------------------

run := {
	"id": "run_1",
	"workflow": "support_case_resolution",
	"hop_count": 3,
	"max_hops": 10,
	"budget": {"tokens": 20000, "tool_calls": 20, "cost_usd": 1.0},
	"spent": {"tokens": 1200, "tool_calls": 2, "cost_usd": 0.1},
	"now": 1767225600,
	"deadline": 1767229200,
	"sensitivity": "confidential",
}

agent := {
	"slug": "case_manager",
	"status": "active",
	"data_classification": "confidential",
	"allowed_tools": {
		"kb_search": "read",
		"crm.get_case": "write",
		"crm.update_case": "read",
		"crm.refund": "irreversible",
		"web.search": "read",
	},
}

tools := {
	"kb_search": {"name": "kb_search", "side_effect": "read", "external": false},
	"crm.get_case": {"name": "crm.get_case", "side_effect": "read"},
	"crm.update_case": {"name": "crm.update_case", "side_effect": "write"},
	"crm.refund": {"name": "crm.refund", "side_effect": "irreversible"},
	"crm.delete_case": {"name": "crm.delete_case", "side_effect": "irreversible"},
	"web.search": {"name": "web.search", "side_effect": "read", "external": true},
}

# A tool.call input for the named tool, with top-level parts replaced by `changes`.
call(tool, changes) := lib.merge(
	{"decision_point": "tool.call", "version": 1, "run": run, "agent": agent, "tool": tools[tool]},
	changes,
)

decide_call(tool, changes) := tool_call.decide(call(tool, changes))

with_agent(changes) := {"agent": lib.merge(agent, changes)}

with_run(changes) := {"run": lib.merge(run, changes)}

ok := {"allow": true, "require_approval": false, "reasons": []}

refusal(reasons) := {"allow": false, "require_approval": false, "reasons": reasons}

approval(reasons, approvers, quorum) := {
	"allow": true,
	"require_approval": true,
	"reasons": reasons,
	"approvers": approvers,
	"quorum": quorum,
}

# --- Entry point and missing facts -----------------------------------------------------------

test_entrypoint_is_always_defined_and_denies_without_input if {
	tool_call.decision.allow == false
}

test_empty_input_denies if {
	tool_call.decide({}) == refusal(["no rule allows this request"])
}

test_missing_agent_status_denies if {
	decide_call("kb_search", {"agent": object.remove(agent, ["status"])}).allow == false
}

test_missing_tool_side_effect_denies if {
	decide_call("kb_search", {"tool": {"name": "kb_search"}}).allow == false
}

test_missing_run_limits_deny if {
	decide_call("kb_search", {"run": object.remove(run, ["max_hops", "spent"])}).allow == false
}

test_malformed_facts_never_count if {
	decide_call("kb_search", with_run({"hop_count": "3"})).allow == false
	decide_call("kb_search", {"facts": {"amount": "lots", "confidence": "high"}}) == ok
}

# --- Allowed tools and scopes ----------------------------------------------------------------

test_allowed_tool_within_scope_is_allowed if {
	decide_call("kb_search", {}) == ok
}

test_wider_scope_covers_a_narrower_side_effect if {
	decide_call("crm.get_case", {}) == ok
}

test_tool_not_in_allowed_tools_is_denied if {
	decide_call("crm.delete_case", {}) == refusal(["agent case_manager may not call crm.delete_case"])
}

test_scope_too_narrow_is_denied if {
	reason := "agent case_manager has read scope on crm.update_case, which needs write"
	decide_call("crm.update_case", {}) == refusal([reason])
}

test_unknown_scope_is_denied if {
	unknown := with_agent({"allowed_tools": {"kb_search": "admin"}})
	reason := "agent case_manager has admin scope on kb_search, which needs read"
	decide_call("kb_search", unknown) == refusal([reason])
}

test_inactive_agent_is_denied if {
	reason := "agent case_manager is not active (status retired)"
	decide_call("kb_search", with_agent({"status": "retired"})) == refusal([reason])
}

# --- Restricted data and external tools ------------------------------------------------------

test_restricted_run_data_to_external_tool_is_denied if {
	reason := "restricted data may not flow to external tool web.search"
	decide_call("web.search", with_run({"sensitivity": "restricted"})) == refusal([reason])
}

test_restricted_agent_to_external_tool_is_denied if {
	restricted := lib.merge(agent, {"data_classification": "restricted"})
	reason := "restricted data may not flow to external tool web.search"
	without_run_sensitivity := object.remove(run, ["sensitivity"])
	decide_call("web.search", {"agent": restricted, "run": without_run_sensitivity}) == refusal([reason])
}

test_restricted_data_to_internal_tool_is_allowed if {
	decide_call("kb_search", with_run({"sensitivity": "restricted"})) == ok
}

test_confidential_data_to_external_tool_is_allowed if {
	decide_call("web.search", {}) == ok
}

# --- Run limits ------------------------------------------------------------------------------

test_hop_limit_reached_is_denied if {
	decide_call("kb_search", with_run({"hop_count": 10})) == refusal(["hop limit 10 reached"])
}

test_hop_below_limit_is_allowed if {
	decide_call("kb_search", with_run({"hop_count": 9})) == ok
}

test_budget_exceeded_is_denied if {
	spent := {"tokens": 1200, "tool_calls": 2, "cost_usd": 1.2}
	decide_call("kb_search", with_run({"spent": spent})) == refusal(["budget exceeded: cost_usd 1.2 > 1"])
}

test_budget_without_a_key_has_no_limit_for_it if {
	decide_call("kb_search", with_run({"budget": {"tool_calls": 20}, "spent": {"cost_usd": 9.5}})) == ok
}

test_deadline_passed_is_denied if {
	decide_call("kb_search", with_run({"now": 1767229300})) == refusal(["deadline passed"])
}

test_no_deadline_is_allowed if {
	decide_call("kb_search", with_run({"deadline": null})) == ok
}

test_every_deny_reason_is_reported_sorted if {
	d := decide_call("crm.delete_case", {
		"agent": lib.merge(agent, {"status": "deprecated"}),
		"run": lib.merge(run, {"hop_count": 12, "now": 1767229300}),
	})
	d == refusal([
		"agent case_manager is not active (status deprecated)",
		"agent case_manager may not call crm.delete_case",
		"deadline passed",
		"hop limit 10 reached",
	])
}

# --- Approvals -------------------------------------------------------------------------------

test_irreversible_tool_requires_approval if {
	d := decide_call("crm.refund", {"facts": {"amount": 120, "confidence": 0.97}})
	d == approval(["crm.refund is irreversible"], ["reviewer"], 1)
}

test_amount_over_threshold_requires_approval if {
	d := decide_call("crm.get_case", {"facts": {"amount": 750}})
	d == approval(["amount 750 is over the approval threshold 500"], ["reviewer"], 1)
}

test_amount_at_threshold_needs_no_approval if {
	decide_call("crm.get_case", {"facts": {"amount": 500}}) == ok
}

test_low_confidence_requires_approval if {
	d := decide_call("kb_search", {"facts": {"confidence": 0.6}})
	d == approval(["confidence 0.6 is below 0.85"], ["reviewer"], 1)
}

test_confidence_at_minimum_needs_no_approval if {
	decide_call("kb_search", {"facts": {"confidence": 0.85}}) == ok
}

test_high_value_needs_platform_and_a_quorum_of_two if {
	d := decide_call("crm.refund", {"facts": {"amount": 7500, "confidence": 0.5}})
	d == approval(
		[
			"amount 7500 is over the approval threshold 500",
			"confidence 0.5 is below 0.85",
			"crm.refund is irreversible",
		],
		["platform", "reviewer"],
		2,
	)
}

test_refused_call_is_not_sent_for_approval if {
	d := decide_call("crm.refund", {"agent": lib.merge(agent, {"status": "retired"}), "facts": {"amount": 7500}})
	d == refusal(["agent case_manager is not active (status retired)"])
}

test_approval_settings_from_data if {
	[tool_call.amount_threshold, tool_call.min_confidence, tool_call.high_value_amount] == [500, 0.85, 5000]
	[tool_call.default_group, tool_call.high_value_group] == ["reviewer", "platform"]
	tool_call.high_value_quorum == 2
}

# --- The positive rule alone refuses what the deny checks explain ----------------------------

test_positive_rule_grants_an_allowed_call if {
	tool_call.granted(call("kb_search", {}))
}

test_positive_rule_refuses_without_every_fact if {
	tool_call.granted(call("crm.delete_case", {})) == false
	tool_call.granted(call("kb_search", {"agent": object.remove(agent, ["status"])})) == false
	tool_call.granted(call("kb_search", with_run({"budget": "unlimited"}))) == false
	tool_call.granted({}) == false
}
