# Shared vocabulary and checks used by every decision point.
#
# Everything here is a function of its arguments (no `input`), so that each decision point
# can stay a pure function of its input document and its tests can call it directly.
package baton.lib

import rego.v1

# Side-effect scopes, narrowest first: a grant covers every side effect at or below its rank.
scope_rank := {"read": 1, "write": 2, "irreversible": 3}

# Data classifications, least sensitive first.
classification_rank := {"public": 1, "internal": 2, "confidential": 3, "restricted": 4}

# A scope `granted` to an agent covers a tool with side effect `needed`. An unknown scope or
# side effect has no rank, so it covers nothing and is covered by nothing.
scope_covers(granted, needed) if scope_rank[granted] >= scope_rank[needed]

# A clearance `clearance` may see data classified `sensitivity` (unknown values: no).
clearance_covers(clearance, sensitivity) if {
	classification_rank[clearance] >= classification_rank[sensitivity]
}

# A non-empty string once surrounding white space is removed.
non_empty(value) if {
	is_string(value)
	trim_space(value) != ""
}

# A message from its parts: strings as they are, numbers as sprintf's %v prints them (1.0 as
# "1"), true, false and null by name, and a collection by its type, e.g. "(array)". Messages
# are joined with concat rather than built with sprintf("%s"), because rego-cpp's sprintf
# prints some strings with their quotes (those bound from a literal or returned by concat,
# upper, object.get and others); and rego-cpp's json.marshal fails on arrays of strings
# from the input.
message(parts) := concat("", [text(part) | some part in parts])

text(x) := x if is_string(x)

text(x) := sprintf("%v", [x]) if is_number(x)

text(x) := "true" if x == true

text(x) := "false" if x == false

text(x) := "null" if is_null(x)

text(x) := concat("", ["(", type_name(x), ")"]) if {
	not is_string(x)
	not is_number(x)
	not is_boolean(x)
	not is_null(x)
}

# A list joined with `separator`, each item as message() prints it.
join(separator, items) := concat(separator, [text(item) | some item in items])

# object.get, except that a `doc` that is not an object (which object.get refuses with an
# error on OPA) also gets the `fallback`.
get(doc, path, fallback) := object.get(doc, path, fallback) if is_object(doc) else := fallback

# `base` with the keys of `changes` replaced whole (a shallow merge). object.union merges
# nested objects on OPA but replaces them on rego-cpp, so it is only ever given objects
# without shared keys.
merge(base, changes) := object.union(object.remove(base, object.keys(changes)), changes)

# --- Missing facts ---------------------------------------------------------------------------

# object.get returns this only when a path does not exist (a present null stays null).
_absent := "<baton: absent>"

has_path(doc, path) if get(doc, path, _absent) != _absent

# The shortest missing prefix of `path` in `doc`, dotted ("run" when the whole run is
# missing, "run.max_hops" when only that key is); undefined when the path exists.
# (The prefixes are listed shortest first; min() is avoided because rego-cpp raises an
# error, not undefined, when array.slice gets the min of an empty set.)
_missing_prefix(doc, path) := concat(".", prefixes[0]) if {
	prefixes := [prefix |
		some n in numbers.range(1, count(path))
		prefix := array.slice(path, 0, n)
		not has_path(doc, prefix)
	]
	count(prefixes) > 0
}

# "incomplete input: missing agent.status, run" for the required `paths` (key arrays)
# absent from `doc`; undefined when every one is present.
incomplete(doc, paths) := message(["incomplete input: missing ", join(", ", sorted(missing))]) if {
	missing := {name | some path in paths; name := _missing_prefix(doc, path)}
	count(missing) > 0
}

# --- The envelope: which decision point, which version of its input ------------------------

# The version of the input documents these rules were written for. A document of another
# version may mean something else, so it is refused rather than guessed at.
input_version := 1

envelope_paths := {["decision_point"], ["version"]}

envelope_ok(inp, point) if {
	inp.decision_point == point
	inp.version == input_version
}

wrong_point_reason(inp, point) := message(["input is for ", inp.decision_point, ", not ", point]) if {
	has_path(inp, ["decision_point"])
	inp.decision_point != point
}

version_reason(inp) := message(["input version ", inp.version, " is not supported"]) if {
	has_path(inp, ["version"])
	inp.version != input_version
}

# The run fields every limit check reads (a set of paths, to union with a point's own).
run_paths := {
	["run", "hop_count"],
	["run", "max_hops"],
	["run", "budget"],
	["run", "spent"],
	["run", "now"],
	["run", "deadline"],
}

# --- Run limits: hops, budget, deadline ------------------------------------------------------

# Every comparison below checks first that both sides are numbers: engines order values of
# different types differently, and a malformed fact must not decide anything.

hop_limit_reason(run) := message(["hop limit ", run.max_hops, " reached"]) if {
	is_number(run.hop_count)
	is_number(run.max_hops)
	run.hop_count >= run.max_hops
}

# Every budget key (tokens, tool_calls, cost_usd) whose spend is over its limit. A key missing
# from the budget has no limit; a key missing from the spend has spent nothing.
_over_budget(run) := {message([key, " ", spent, " > ", limit]) |
	some key
	limit := run.budget[key]
	spent := object.get(run, ["spent", key], 0)
	is_number(limit)
	is_number(spent)
	spent > limit
}

budget_reason(run) := message(["budget exceeded: ", join(", ", sorted(over))]) if {
	over := _over_budget(run)
	count(over) > 0
}

# Timestamps stay out of the message: engines print large non-integer numbers differently.
deadline_reason(run) := "deadline passed" if {
	is_number(run.now)
	is_number(run.deadline)
	run.now > run.deadline
}

# The positive side of the limit checks: every fact is present and well typed, and no limit
# is reached. Missing or malformed facts therefore never count as "within limits".
within_limits(run) if {
	is_number(run.hop_count)
	is_number(run.max_hops)
	run.hop_count < run.max_hops
	is_object(run.budget)
	is_object(run.spent)
	every key, limit in run.budget {
		is_number(limit)
		is_number(object.get(run.spent, key, 0))
		object.get(run.spent, key, 0) <= limit
	}
	is_number(run.now)
	_before_deadline(run)
}

_before_deadline(run) if run.deadline == null

_before_deadline(run) if {
	is_number(run.deadline)
	run.now <= run.deadline
}

# --- Assembling a decision -------------------------------------------------------------------

# The members of set `s` as a sorted array. (rego-cpp's sort() of a set returns a set, which
# serialises like an array but cannot be indexed or compared with one; iterating it does go
# in order.)
sorted(s) := [x | some x in sort(s)]

# Default deny: a request is allowed only when `granted` (the positive rule held, with every
# fact it needs) and no deny reason fired. A refusal always says why.
verdict(granted, denials) := {"allow": true, "reasons": []} if {
	granted == true
	count(denials) == 0
}

verdict(_, denials) := {"allow": false, "reasons": sorted(denials)} if count(denials) > 0

verdict(granted, denials) := {"allow": false, "reasons": ["no rule allows this request"]} if {
	granted != true
	count(denials) == 0
}

# The answer of a decision point without approvals.
decision(granted, denials) := {
	"allow": v.allow,
	"require_approval": false,
	"reasons": v.reasons,
} if {
	v := verdict(granted, denials)
}

# The answer of a decision point that may ask for human approval. Approval is asked only of
# a request policy allows: no reviewer can approve what policy refuses.
approval_decision(granted, denials, approvals, approvers, quorum) := {
	"allow": true,
	"require_approval": true,
	"reasons": sorted(approvals),
	"approvers": sorted(approvers),
	"quorum": quorum,
} if {
	v := verdict(granted, denials)
	v.allow == true
	count(approvals) > 0
} else := decision(granted, denials)
