package baton.lib_test

import rego.v1

import data.baton.lib

# A run well within every limit.
run := {
	"hop_count": 3,
	"max_hops": 10,
	"budget": {"tokens": 20000, "tool_calls": 20, "cost_usd": 1.0},
	"spent": {"tokens": 1200, "tool_calls": 2, "cost_usd": 0.1},
	"now": 1767225600,
	"deadline": 1767229200,
}

with_run(changes) := lib.merge(run, changes)

limit_reasons(a_run) := [lib.hop_limit_reached(a_run), lib.budget_exceeded(a_run), lib.deadline_passed(a_run)]

# --- Vocabulary ------------------------------------------------------------------------------

test_scope_covers_same_and_narrower_side_effects if {
	lib.scope_covers("read", "read")
	lib.scope_covers("irreversible", "write")
}

test_scope_does_not_cover_wider_or_unknown_side_effects if {
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
	not lib.non_empty(" \t")
	not lib.non_empty(42)
}

test_get_answers_the_fallback_for_missing_keys_and_non_objects if {
	[lib.get({"a": 1}, "a", 0), lib.get({"a": 1}, "b", 0), lib.get("text", "a", 0)] == [1, 0, 0]
}

test_sorted_is_an_array if {
	lib.sorted({"b", "a"}) == ["a", "b"]
}

test_merge_replaces_nested_objects_whole if {
	lib.merge({"a": {"x": 1, "y": 2}, "b": 1}, {"a": {"x": 3}}) == {"a": {"x": 3}, "b": 1}
}

# --- Decisions -------------------------------------------------------------------------------

test_refused_sorts_its_reasons if {
	lib.refused(["b", "a"]) == {"allow": false, "require_approval": false, "reasons": ["a", "b"]}
}

test_refused_without_reasons_says_no_rule_allows if {
	lib.refused([]).reasons == ["no rule allows this request"]
}

# --- Run limits ------------------------------------------------------------------------------

test_within_limits if {
	lib.within_limits(run)
	limit_reasons(run) == [[], [], []]
}

test_limits_reached if {
	not lib.within_limits(with_run({"hop_count": 10}))
	not lib.within_limits(with_run({"spent": {"cost_usd": 1.2}}))
	not lib.within_limits(with_run({"now": 1767229201}))
	exhausted := with_run({"hop_count": 10, "spent": {"tokens": 25000, "tool_calls": 21}, "now": 1767229201})
	limit_reasons(exhausted) == [
		["hop limit 10 reached"],
		["budget exceeded: tokens 25000 > 20000, tool_calls 21 > 20"],
		["deadline passed"],
	]
}

test_limits_at_their_bounds_and_open_limits_hold if {
	lib.within_limits(with_run({"hop_count": 9, "spent": {"tokens": 20000, "cost_usd": 1.0}, "now": 1767229200}))
	lib.within_limits(with_run({"budget": {"tool_calls": 20}, "spent": {"tokens": 99999}, "deadline": null}))
}

test_missing_or_malformed_limits_are_not_within_limits if {
	not lib.within_limits({})
	not lib.within_limits(object.remove(run, ["deadline"]))
	not lib.within_limits(object.remove(run, ["spent"]))
	not lib.within_limits(with_run({"hop_count": "3"}))
	not lib.within_limits(with_run({"deadline": "tomorrow"}))
	not lib.within_limits(with_run({"budget": {"cost_usd": "1.0"}}))
	not lib.within_limits(with_run({"budget": "unlimited"}))
	limit_reasons({}) == [[], [], []]
}
