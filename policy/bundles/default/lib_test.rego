package baton.lib_test

import rego.v1

import data.baton.lib

# A run well within every limit.
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

# --- Ranks -----------------------------------------------------------------------------------

test_scope_ranks_are_ordered if {
	lib.scope_rank.read < lib.scope_rank.write
	lib.scope_rank.write < lib.scope_rank.irreversible
}

test_classification_ranks_are_ordered if {
	lib.classification_rank.public < lib.classification_rank.internal
	lib.classification_rank.internal < lib.classification_rank.confidential
	lib.classification_rank.confidential < lib.classification_rank.restricted
}

test_scope_covers_same_and_narrower_side_effects if {
	lib.scope_covers("read", "read")
	lib.scope_covers("write", "read")
	lib.scope_covers("irreversible", "write")
}

test_scope_does_not_cover_wider_or_unknown_side_effects if {
	not lib.scope_covers("read", "write")
	not lib.scope_covers("write", "irreversible")
	not lib.scope_covers("admin", "read")
	not lib.scope_covers("irreversible", "delete")
}

test_clearance_covers_same_and_less_sensitive_data if {
	lib.clearance_covers("confidential", "confidential")
	lib.clearance_covers("restricted", "public")
}

test_clearance_does_not_cover_more_sensitive_or_unknown_data if {
	not lib.clearance_covers("internal", "confidential")
	not lib.clearance_covers("secret", "public")
}

test_non_empty if {
	lib.non_empty("ada")
	not lib.non_empty("")
	not lib.non_empty(" \t")
	not lib.non_empty(42)
}

test_message_prints_strings_and_numbers if {
	lib.message(["cost_usd ", 1.2, " > ", 1.0, " after ", 3, " calls"]) == "cost_usd 1.2 > 1 after 3 calls"
	parts := ["flag ", true, ", ", false, ", ", null, ", list ", ["a"], ", set ", {"a"}]
	lib.message(parts) == "flag true, false, null, list (array), set (set)"
}

test_join if {
	lib.join(", ", ["b", 2]) == "b, 2"
	lib.join(", ", []) == ""
}

test_get_answers_the_fallback_for_non_objects if {
	lib.get({"a": {"b": 1}}, ["a", "b"], 0) == 1
	lib.get({"a": {"b": 1}}, ["a", "c"], 0) == 0
	lib.get("text", ["a"], 0) == 0
	lib.get(null, ["a"], 0) == 0
}

test_merge_replaces_nested_objects_whole if {
	lib.merge({"a": {"x": 1, "y": 2}, "b": 1}, {"a": {"x": 3}}) == {"a": {"x": 3}, "b": 1}
}

test_sorted_is_an_array if {
	lib.sorted({"b", "a"}) == ["a", "b"]
	lib.sorted({"b", "a"})[0] == "a"
}

# --- Missing facts ---------------------------------------------------------------------------

test_has_path_counts_a_present_null if {
	lib.has_path({"run": {"deadline": null}}, ["run", "deadline"])
	not lib.has_path({"run": {}}, ["run", "deadline"])
	not lib.has_path({"run": 3}, ["run", "deadline"])
}

test_incomplete_is_undefined_when_nothing_is_missing if {
	not lib.incomplete({"run": run}, lib.run_paths)
}

test_incomplete_names_the_shortest_missing_prefix if {
	lib.incomplete({}, lib.run_paths) == "incomplete input: missing run"
	partial := {"run": {"hop_count": 1, "deadline": null}}
	missing := "incomplete input: missing run.budget, run.max_hops, run.now, run.spent"
	lib.incomplete(partial, lib.run_paths) == missing
}

test_has_path_in_something_that_is_not_an_object if {
	not lib.has_path("text", ["run"])
	lib.incomplete("text", {["run"]}) == "incomplete input: missing run"
}

# --- The envelope ----------------------------------------------------------------------------

test_envelope_of_the_right_point_and_version if {
	envelope := {"decision_point": "tool.call", "version": 1}
	lib.envelope_ok(envelope, "tool.call")
	not lib.wrong_point_reason(envelope, "tool.call")
	not lib.version_reason(envelope)
}

test_envelope_of_another_point_or_version if {
	not lib.envelope_ok({"decision_point": "run.start", "version": 1}, "tool.call")
	not lib.envelope_ok({"decision_point": "tool.call", "version": 2}, "tool.call")
	not lib.envelope_ok({}, "tool.call")
	reason := lib.wrong_point_reason({"decision_point": "run.start"}, "tool.call")
	reason == "input is for run.start, not tool.call"
	lib.version_reason({"version": 2}) == "input version 2 is not supported"
}

# --- Limits ----------------------------------------------------------------------------------

test_within_limits if {
	lib.within_limits(run)
	not lib.hop_limit_reason(run)
	not lib.budget_reason(run)
	not lib.deadline_reason(run)
}

test_hop_limit_reached_at_max_hops if {
	limited := lib.merge(run, {"hop_count": 10})
	lib.hop_limit_reason(limited) == "hop limit 10 reached"
	not lib.within_limits(limited)
}

test_hop_below_max_hops_is_within_limits if {
	not lib.hop_limit_reason(lib.merge(run, {"hop_count": 9}))
	lib.within_limits(lib.merge(run, {"hop_count": 9}))
}

test_budget_exceeded if {
	over := lib.merge(run, {"spent": {"tokens": 1200, "tool_calls": 2, "cost_usd": 1.2}})
	lib.budget_reason(over) == "budget exceeded: cost_usd 1.2 > 1"
	not lib.within_limits(over)
}

test_budget_exceeded_names_every_key if {
	over := lib.merge(run, {"spent": {"tokens": 25000, "tool_calls": 21, "cost_usd": 0.5}})
	lib.budget_reason(over) == "budget exceeded: tokens 25000 > 20000, tool_calls 21 > 20"
}

test_budget_spent_exactly_is_within_limits if {
	exact := lib.merge(run, {"spent": {"tokens": 20000, "tool_calls": 20, "cost_usd": 1.0}})
	not lib.budget_reason(exact)
	lib.within_limits(exact)
}

test_budget_key_missing_means_no_limit if {
	unlimited := lib.merge(run, {"budget": {"tool_calls": 20}, "spent": {"tokens": 99999, "cost_usd": 50}})
	not lib.budget_reason(unlimited)
	lib.within_limits(unlimited)
}

test_deadline_passed if {
	late := lib.merge(run, {"now": 1767229201})
	lib.deadline_reason(late) == "deadline passed"
	not lib.within_limits(late)
}

test_no_deadline_never_passes if {
	open := lib.merge(run, {"now": 1900000000, "deadline": null})
	not lib.deadline_reason(open)
	lib.within_limits(open)
}

test_malformed_limits_never_deny if {
	not lib.hop_limit_reason({"hop_count": "12", "max_hops": 10})
	not lib.budget_reason({"budget": {"tokens": 10}, "spent": {"tokens": "11"}})
	not lib.deadline_reason({"now": "late", "deadline": 1})
}

test_missing_or_malformed_limits_are_not_within_limits if {
	not lib.within_limits({})
	not lib.within_limits(object.remove(run, ["max_hops"]))
	not lib.within_limits(object.remove(run, ["deadline"]))
	not lib.within_limits(lib.merge(run, {"hop_count": "3"}))
	not lib.within_limits(lib.merge(run, {"budget": {"cost_usd": "1.0"}}))
}

# --- Assembling a decision -------------------------------------------------------------------

test_decision_allows_a_granted_request_without_denials if {
	lib.decision(true, set()) == {"allow": true, "require_approval": false, "reasons": []}
}

test_decision_denies_with_sorted_reasons if {
	lib.decision(true, {"b reason", "a reason"}) == {
		"allow": false,
		"require_approval": false,
		"reasons": ["a reason", "b reason"],
	}
}

test_decision_denies_by_default if {
	lib.decision(false, set()) == {
		"allow": false,
		"require_approval": false,
		"reasons": ["no rule allows this request"],
	}
}

test_approval_decision_asks_for_approval_of_an_allowed_request if {
	lib.approval_decision(true, set(), {"x is irreversible"}, {"reviewer"}, 1) == {
		"allow": true,
		"require_approval": true,
		"reasons": ["x is irreversible"],
		"approvers": ["reviewer"],
		"quorum": 1,
	}
}

test_approval_decision_never_asks_for_approval_of_a_refusal if {
	lib.approval_decision(true, {"hop limit 10 reached"}, {"x is irreversible"}, {"reviewer"}, 1) == {
		"allow": false,
		"require_approval": false,
		"reasons": ["hop limit 10 reached"],
	}
}
