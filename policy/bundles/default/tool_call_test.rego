package baton.tool_call_test

import rego.v1

import data.baton.lib
import data.baton.tool_call

# --- Fixtures: a case manager agent in a run well within its limits --------------------------

run := {
	"id": "run_1",
	"workflow": "support_case_resolution",
	"release_id": "rel_0123456789abcdef",
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
	"identity": "agent.case_manager",
}

tools := {
	"kb_search": {"name": "kb_search", "side_effect": "read", "external": false},
	"crm.get_case": {"name": "crm.get_case", "side_effect": "read", "external": false},
	"crm.update_case": {"name": "crm.update_case", "side_effect": "write", "external": false},
	"crm.refund": {"name": "crm.refund", "side_effect": "irreversible", "external": false},
	"crm.delete_case": {"name": "crm.delete_case", "side_effect": "irreversible", "external": false},
	"web.search": {"name": "web.search", "side_effect": "read", "external": true},
}

# A tool.call input for the named tool, with top-level parts replaced by `changes`.
call(tool, changes) := lib.merge(
	{
		"decision_point": "tool.call",
		"version": 1,
		"run": run,
		"agent": agent,
		"tool": tools[tool],
		"args": {"case_id": "case_42"},
		"facts": {},
	},
	changes,
)

with_agent(changes) := {"agent": lib.merge(agent, changes)}

with_run(changes) := {"run": lib.merge(run, changes)}

allowed_without_approval(d) if {
	d.allow == true
	d.require_approval == false
	d.reasons == []
}

# --- Entry point and missing facts -----------------------------------------------------------

test_empty_input_denies if {
	d := tool_call.decide({})
	d.allow == false
	d.require_approval == false
	d.reasons == ["incomplete input: missing agent, decision_point, run, tool, version"]
}

test_entrypoint_is_always_defined_and_denies_without_input if {
	tool_call.decision.allow == false
}

test_missing_agent_status_denies if {
	d := tool_call.decide(call("kb_search", {"agent": object.remove(agent, ["status"])}))
	d.allow == false
	d.reasons == ["incomplete input: missing agent.status"]
}

test_missing_tool_side_effect_denies if {
	d := tool_call.decide(call("kb_search", {"tool": {"name": "kb_search"}}))
	d.allow == false
	d.reasons == ["incomplete input: missing tool.side_effect"]
}

test_missing_run_limits_deny if {
	d := tool_call.decide(call("kb_search", {"run": object.remove(run, ["max_hops", "spent"])}))
	d.allow == false
	d.reasons == ["incomplete input: missing run.max_hops, run.spent"]
}

# --- Allowed tools and scopes ----------------------------------------------------------------

test_allowed_tool_within_scope_is_allowed if {
	allowed_without_approval(tool_call.decide(call("kb_search", {})))
}

test_wider_scope_covers_a_narrower_side_effect if {
	allowed_without_approval(tool_call.decide(call("crm.get_case", {})))
}

test_tool_not_in_allowed_tools_is_denied if {
	d := tool_call.decide(call("crm.delete_case", {}))
	d.allow == false
	d.require_approval == false
	d.reasons == ["agent case_manager may not call crm.delete_case"]
}

test_agent_without_tools_may_call_nothing if {
	toolless := with_agent({"slug": "intake_classifier", "allowed_tools": {}})
	d := tool_call.decide(call("kb_search", toolless))
	d.allow == false
	d.reasons == ["agent intake_classifier may not call kb_search"]
}

test_scope_too_narrow_is_denied if {
	d := tool_call.decide(call("crm.update_case", {}))
	d.allow == false
	d.reasons == ["agent case_manager has read scope on crm.update_case, which needs write"]
}

test_unknown_scope_is_denied if {
	d := tool_call.decide(call("kb_search", with_agent({"allowed_tools": {"kb_search": "admin"}})))
	d.allow == false
	d.reasons == ["agent case_manager has admin scope on kb_search, which needs read"]
}

# --- Agent status ----------------------------------------------------------------------------

test_inactive_agent_is_denied if {
	d := tool_call.decide(call("kb_search", with_agent({"status": "retired"})))
	d.allow == false
	d.reasons == ["agent case_manager is not active (status retired)"]
}

test_draft_agent_is_denied if {
	d := tool_call.decide(call("kb_search", with_agent({"status": "draft"})))
	d.allow == false
	d.reasons == ["agent case_manager is not active (status draft)"]
}

# --- Restricted data and external tools ------------------------------------------------------

test_restricted_run_data_to_external_tool_is_denied if {
	d := tool_call.decide(call("web.search", with_run({"sensitivity": "restricted"})))
	d.allow == false
	d.reasons == ["restricted data may not flow to external tool web.search"]
}

test_restricted_agent_to_external_tool_is_denied if {
	d := tool_call.decide(call("web.search", with_agent({"data_classification": "restricted"})))
	d.allow == false
	d.reasons == ["restricted data may not flow to external tool web.search"]
}

test_restricted_data_to_internal_tool_is_allowed if {
	d := tool_call.decide(call("kb_search", with_run({"sensitivity": "restricted"})))
	allowed_without_approval(d)
}

test_confidential_data_to_external_tool_is_allowed if {
	allowed_without_approval(tool_call.decide(call("web.search", {})))
}

# --- Run limits ------------------------------------------------------------------------------

test_hop_limit_reached_is_denied if {
	d := tool_call.decide(call("kb_search", with_run({"hop_count": 10})))
	d.allow == false
	d.reasons == ["hop limit 10 reached"]
}

test_hop_below_limit_is_allowed if {
	allowed_without_approval(tool_call.decide(call("kb_search", with_run({"hop_count": 9}))))
}

test_budget_exceeded_is_denied if {
	spent := {"tokens": 1200, "tool_calls": 2, "cost_usd": 1.2}
	d := tool_call.decide(call("kb_search", with_run({"spent": spent})))
	d.allow == false
	d.reasons == ["budget exceeded: cost_usd 1.2 > 1"]
}

test_budget_without_a_key_has_no_limit_for_it if {
	unpriced := with_run({"budget": {"tool_calls": 20}, "spent": {"cost_usd": 9.5}})
	d := tool_call.decide(call("kb_search", unpriced))
	allowed_without_approval(d)
}

test_deadline_passed_is_denied if {
	d := tool_call.decide(call("kb_search", with_run({"now": 1767229300})))
	d.allow == false
	d.reasons == ["deadline passed"]
}

test_no_deadline_is_allowed if {
	allowed_without_approval(tool_call.decide(call("kb_search", with_run({"deadline": null}))))
}

test_every_deny_reason_is_reported_sorted if {
	d := tool_call.decide(call("crm.delete_case", {
		"agent": lib.merge(agent, {"status": "deprecated"}),
		"run": lib.merge(run, {"hop_count": 12, "now": 1767229300}),
	}))
	d.allow == false
	d.reasons == [
		"agent case_manager is not active (status deprecated)",
		"agent case_manager may not call crm.delete_case",
		"deadline passed",
		"hop limit 10 reached",
	]
}

# --- Approvals -------------------------------------------------------------------------------

test_irreversible_tool_requires_approval if {
	d := tool_call.decide(call("crm.refund", {"facts": {"amount": 120, "confidence": 0.97}}))
	d.allow == true
	d.require_approval == true
	d.reasons == ["crm.refund is irreversible"]
	d.approvers == ["reviewer"]
	d.quorum == 1
}

test_amount_over_threshold_requires_approval if {
	d := tool_call.decide(call("crm.get_case", {"facts": {"amount": 750}}))
	d.allow == true
	d.require_approval == true
	d.reasons == ["amount 750 is over the approval threshold 500"]
	d.approvers == ["reviewer"]
	d.quorum == 1
}

test_amount_at_threshold_needs_no_approval if {
	allowed_without_approval(tool_call.decide(call("crm.get_case", {"facts": {"amount": 500}})))
}

test_low_confidence_requires_approval if {
	d := tool_call.decide(call("kb_search", {"facts": {"confidence": 0.6}}))
	d.allow == true
	d.require_approval == true
	d.reasons == ["confidence 0.6 is below 0.85"]
}

test_confidence_at_minimum_needs_no_approval if {
	allowed_without_approval(tool_call.decide(call("kb_search", {"facts": {"confidence": 0.85}})))
}

test_high_value_needs_platform_and_a_quorum_of_two if {
	d := tool_call.decide(call("crm.refund", {"facts": {"amount": 7500, "confidence": 0.5}}))
	d.allow == true
	d.require_approval == true
	d.reasons == [
		"amount 7500 is over the approval threshold 500",
		"confidence 0.5 is below 0.85",
		"crm.refund is irreversible",
	]
	d.approvers == ["platform", "reviewer"]
	d.quorum == 2
}

test_refused_call_is_not_sent_for_approval if {
	retired := lib.merge(agent, {"status": "retired"})
	d := tool_call.decide(call("crm.refund", {"agent": retired, "facts": {"amount": 7500}}))
	d.allow == false
	d.require_approval == false
	d.reasons == ["agent case_manager is not active (status retired)"]
	not d.approvers
}

# --- Settings come from data.baton.approval --------------------------------------------------

test_approval_settings_from_data if {
	tool_call.amount_threshold == 500
	tool_call.min_confidence == 0.85
	tool_call.default_group == "reviewer"
	tool_call.high_value_amount == 5000
	tool_call.high_value_group == "platform"
	tool_call.high_value_quorum == 2
}

# --- The positive rule alone refuses what the deny checks explain ----------------------------

test_positive_rule_grants_an_allowed_call if {
	tool_call.granted(call("kb_search", {}))
}

test_positive_rule_refuses_without_every_fact if {
	tool_call.granted(call("crm.update_case", {})) == false
	tool_call.granted(call("crm.delete_case", {})) == false
	tool_call.granted(call("kb_search", with_agent({"status": "draft"}))) == false
	tool_call.granted(call("web.search", with_run({"sensitivity": "restricted"}))) == false
	tool_call.granted(call("kb_search", with_run({"hop_count": 10}))) == false
	tool_call.granted(call("kb_search", {"agent": object.remove(agent, ["slug", "status"])})) == false
	tool_call.granted({}) == false
}

test_missing_agent_slug_still_denies if {
	d := tool_call.decide(call("crm.delete_case", {"agent": object.remove(agent, ["slug"])}))
	d.allow == false
	d.reasons == ["incomplete input: missing agent.slug"]
}

# --- The envelope ----------------------------------------------------------------------------

test_input_for_another_decision_point_is_denied if {
	d := tool_call.decide(call("kb_search", {"decision_point": "step.transition"}))
	d.allow == false
	d.reasons == ["input is for step.transition, not tool.call"]
}

test_unsupported_input_version_is_denied if {
	d := tool_call.decide(call("kb_search", {"version": 2}))
	d.allow == false
	d.reasons == ["input version 2 is not supported"]
}

test_malformed_facts_never_count if {
	d := tool_call.decide(call("kb_search", {"agent": lib.merge(agent, {"allowed_tools": "kb_search"})}))
	d.allow == false
	d.reasons == ["no rule allows this request"]
	allowed_without_approval(tool_call.decide(call("kb_search", {"facts": {"amount": "lots"}})))
}
