# Shared vocabulary, run limits and decision shapes used by every decision point.
#
# Everything here is a function of its arguments (no `input`), so that each decision point
# stays a pure function of its input document and its tests can call it directly.
package baton.lib

import rego.v1

# --- Vocabulary ------------------------------------------------------------------------------

# Side-effect scopes, narrowest first: a grant covers every side effect at or below its rank.
# An unknown scope or side effect has no rank, so it covers nothing and is covered by nothing.
scope_rank := {"read": 1, "write": 2, "irreversible": 3}

scope_covers(scope, side_effect) if scope_rank[scope] >= scope_rank[side_effect]

# Data classifications, least sensitive first: a clearance sees data up to its own rank.
classification_rank := {"public": 1, "internal": 2, "confidential": 3, "restricted": 4}

clearance_covers(clearance, sensitivity) if {
	classification_rank[clearance] >= classification_rank[sensitivity]
}

# A string with something in it besides white space.
non_empty(value) if {
	is_string(value)
	not trim_space(value) == ""
}

# The members of a set, sorted (as an array on every engine: rego-cpp's sort of a set is
# a set).
sorted(members) := sort([member | some member in members])

# object.get, except that a `doc` that is not an object gets the `fallback` too.
get(doc, key, fallback) := object.get(doc, key, fallback) if is_object(doc) else := fallback

# `base` with the keys of `changes` replaced whole (a shallow merge, for building inputs).
# object.union merges nested objects on OPA but replaces them on rego-cpp, so it is only
# given objects without shared keys.
merge(base, changes) := object.union(object.remove(base, object.keys(changes)), changes)

# --- Decisions -------------------------------------------------------------------------------

allowed := {"allow": true, "require_approval": false, "reasons": []}

# A refusal with the reasons of the deny checks that fired, sorted. A refusal always says
# why: when no check explains it, the positive rule did not hold.
refused(reasons) := {"allow": false, "require_approval": false, "reasons": sort(reasons)} if {
	not reasons == []
} else := {"allow": false, "require_approval": false, "reasons": ["no rule allows this request"]}

# --- Run limits: deadline, hops, budget ------------------------------------------------------

# Every limit fact is present and a number (the deadline may be null: no deadline), and no
# limit is reached. A key missing from the budget has no limit; a key missing from the spend
# has spent nothing (read with object.get, spent being an object: a spent_on call per key
# costs rego-cpp about a twentieth of a tool.call decision). Limits are checked by
# subtraction, which is undefined for anything but numbers: a malformed fact is never within
# limits, and no engine has to order values of different types (OPA and rego-cpp order them
# differently).
within_limits(run) if {
	before_deadline(run.now, run.deadline)
	run.max_hops - run.hop_count > 0
	spent := run.spent
	is_object(spent)
	budget := run.budget
	is_object(budget)
	every key, limit in budget {
		limit - object.get(spent, key, 0) >= 0
	}
}

before_deadline(now, deadline) if {
	deadline == null
	is_number(now)
} else := true if {
	deadline - now >= 0
}

spent_on(spent, key) := used if {
	used := spent[key]
} else := 0

# The deny side of the limits: each check answers its reasons, [] when the limit holds. They
# explain a refusal that within_limits already made, and trust the types the input schema
# guarantees. Numbers are printed with sprintf's %v (1.0 as "1"), never strings: rego-cpp's
# sprintf quotes some of them.

hop_limit_reached(run) := [sprintf("hop limit %v reached", [run.max_hops])] if {
	run.hop_count >= run.max_hops
} else := []

budget_exceeded(run) := [concat("", ["budget exceeded: ", concat(", ", sort(over))])] if {
	spent := run.spent
	over := [concat("", [key, sprintf(" %v > %v", [used, limit])]) |
		some key
		limit := run.budget[key]
		used := spent_on(spent, key)
		used > limit
	]
	not over == []
} else := []

# Timestamps stay out of the message: engines print large non-integer numbers differently.
deadline_passed(run) := ["deadline passed"] if {
	deadline := run.deadline
	not deadline == null
	run.now > deadline
} else := []
