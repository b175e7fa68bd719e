package baton.agent_lifecycle_test

import rego.v1

import data.baton.agent_lifecycle
import data.baton.lib

ready_agent := {
	"slug": "case_manager",
	"status": "draft",
	"has_owner": true,
	"has_runbook": true,
	"has_slos": true,
}

platform_user := {"username": "pat", "roles": ["platform"], "kind": "user"}

# An agent.lifecycle input: the agent, its target status and the actor.
moving(agent, target, actor) := {
	"decision_point": "agent.lifecycle",
	"version": 1,
	"agent": agent,
	"to": target,
	"actor": actor,
}

# The ready agent with `agent_changes`, moved by a platform user; `extra` replaces top-level parts.
move(agent_changes, target, extra) := agent_lifecycle.decide(lib.merge(
	moving(lib.merge(ready_agent, agent_changes), target, platform_user),
	extra,
))

ok := {"allow": true, "require_approval": false, "reasons": []}

refusal(reasons) := {"allow": false, "require_approval": false, "reasons": reasons}

test_entrypoint_is_always_defined_and_denies_without_input if {
	agent_lifecycle.decision.allow == false
}

test_empty_input_denies if {
	agent_lifecycle.decide({}).allow == false
}

test_missing_agent_slug_denies if {
	agent_lifecycle.decide(moving({"status": "active"}, "deprecated", platform_user)).allow == false
}

# --- Who may move an agent -------------------------------------------------------------------

test_platform_user_may_activate_a_ready_agent if {
	move({}, "active", {}) == ok
}

test_admin_may_deprecate_an_agent if {
	move({"status": "active"}, "deprecated", {"actor": {"username": "root", "roles": ["admin"]}}) == ok
}

test_actor_without_platform_or_admin_role_is_denied if {
	reason := "actor rita needs role platform or admin to change an agent's lifecycle"
	move({}, "active", {"actor": {"username": "rita", "roles": ["reviewer"]}}) == refusal([reason])
}

test_unknown_status_is_denied if {
	reason := "unknown status paused: one of active, deprecated, draft, retired"
	move({"status": "active"}, "paused", {}) == refusal([reason])
}

# --- Activation ------------------------------------------------------------------------------

test_activation_needs_an_owner_a_runbook_and_slos if {
	d := move({"has_owner": false, "has_slos": false}, "active", {})
	d == refusal(["agent case_manager cannot become active: no owner, no SLOs"])
}

test_activation_with_unknown_readiness_is_denied if {
	d := agent_lifecycle.decide(moving({"slug": "case_manager", "status": "draft"}, "active", platform_user))
	d == refusal(["agent case_manager cannot become active: no owner, no runbook, no SLOs"])
}

test_deprecation_needs_no_readiness if {
	move({"status": "active", "has_runbook": false}, "deprecated", {}) == ok
}

# --- Retirement ------------------------------------------------------------------------------

test_retirement_with_a_reason_is_allowed if {
	move({"status": "active"}, "retired", {"reason": "replaced by case_manager_v2"}) == ok
}

test_retirement_without_a_reason_is_denied if {
	reason := "retiring agent case_manager needs a reason"
	move({"status": "active"}, "retired", {}) == refusal([reason])
	move({"status": "active"}, "retired", {"reason": "  "}) == refusal([reason])
}

test_retired_agent_cannot_come_back if {
	reason := "agent case_manager is retired and cannot become "
	move({"status": "retired"}, "active", {}) == refusal([concat("", [reason, "active"])])
	move({"status": "retired"}, "draft", {}) == refusal([concat("", [reason, "draft"])])
}

test_lifecycle_settings_from_data if {
	agent_lifecycle.actor_roles == ["platform", "admin"]
}

test_positive_rule_refuses_without_every_fact if {
	agent_lifecycle.granted(moving(ready_agent, "active", platform_user))
	half_ready := lib.merge(ready_agent, {"has_slos": "yes"})
	agent_lifecycle.granted(moving(half_ready, "active", platform_user)) == false
	agent_lifecycle.granted(moving(ready_agent, "active", {"username": "", "roles": ["admin"]})) == false
	agent_lifecycle.granted({}) == false
}
