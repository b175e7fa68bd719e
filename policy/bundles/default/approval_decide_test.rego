package baton.approval_decide_test

import rego.v1

import data.baton.approval_decide
import data.baton.lib

reviewer := {"username": "rita", "groups": ["reviewer"], "clearance": "confidential"}

# case_manager asked (on ada's run) for a refund that the reviewer group must decide.
request := {
	"requested_by": "ada",
	"agent": "case_manager",
	"approver_group": "reviewer",
	"sensitivity": "confidential",
}

# An approval.decide input: the reviewer and the request with `changes`, and the verdict.
deciding(reviewer_changes, request_changes, verdict) := {
	"decision_point": "approval.decide",
	"version": 1,
	"reviewer": lib.merge(reviewer, reviewer_changes),
	"request": lib.merge(request, request_changes),
	"decision": verdict,
}

decide_as(reviewer_changes, request_changes, verdict) := approval_decide.decide(deciding(
	reviewer_changes,
	request_changes,
	verdict,
))

ok := {"allow": true, "require_approval": false, "reasons": []}

refusal(reasons) := {"allow": false, "require_approval": false, "reasons": reasons}

test_entrypoint_is_always_defined_and_denies_without_input if {
	approval_decide.decision.allow == false
}

test_empty_input_denies if {
	approval_decide.decide({}).allow == false
}

test_missing_requester_denies if {
	doc := deciding({}, {}, "approve")
	approval_decide.decide(lib.merge(doc, {"request": object.remove(request, ["requested_by"])})).allow == false
}

test_group_member_may_approve if {
	decide_as({}, {}, "approve") == ok
}

test_group_member_may_reject if {
	decide_as({}, {}, "reject") == ok
}

test_unknown_decision_is_denied if {
	decide_as({}, {}, "maybe") == refusal(["the decision must be approve or reject"])
}

# --- Separation of duties --------------------------------------------------------------------

test_requester_cannot_approve_their_own_request if {
	decide_as({"username": "ada"}, {}, "approve") == refusal(["requester cannot approve their own request"])
}

test_requester_cannot_reject_their_own_request_either if {
	decide_as({"username": "ada"}, {}, "reject") == refusal(["requester cannot reject their own request"])
}

test_agent_cannot_approve_its_own_action if {
	d := decide_as({"username": "agent.case_manager"}, {}, "approve")
	d == refusal(["the agent cannot approve its own action"])
}

test_agent_named_by_slug_cannot_approve_its_own_action if {
	d := decide_as({"username": "case_manager"}, {}, "approve")
	d == refusal(["the agent cannot approve its own action"])
}

test_another_agent_is_not_the_acting_agent if {
	decide_as({"username": "agent.auditor_bot"}, {}, "approve") == ok
}

test_reviewer_outside_the_approver_group_is_denied if {
	d := decide_as({}, {"approver_group": "platform"}, "approve")
	d == refusal(["reviewer rita is not in the approver group platform"])
}

test_reviewer_outside_the_approver_group_cannot_reject_either if {
	d := decide_as({"groups": ["auditor"]}, {}, "reject")
	d == refusal(["reviewer rita is not in the approver group reviewer"])
}

test_member_of_several_groups_may_decide_for_any if {
	decide_as({"groups": ["reviewer", "platform"]}, {"approver_group": "platform"}, "approve") == ok
}

# --- Clearance -------------------------------------------------------------------------------

test_clearance_below_the_request_sensitivity_is_denied if {
	reason := "reviewer rita is cleared for confidential data, and the request holds restricted data"
	decide_as({}, {"sensitivity": "restricted"}, "approve") == refusal([reason])
}

test_missing_clearance_counts_as_internal if {
	doc := deciding({}, {}, "approve")
	d := approval_decide.decide(lib.merge(doc, {"reviewer": object.remove(reviewer, ["clearance"])}))
	d == refusal(["reviewer rita is cleared for internal data, and the request holds confidential data"])
}

test_missing_sensitivity_counts_as_internal if {
	doc := deciding({"clearance": "internal"}, {}, "approve")
	approval_decide.decide(lib.merge(doc, {"request": object.remove(request, ["sensitivity"])})) == ok
}

test_higher_clearance_covers_less_sensitive_data if {
	decide_as({"clearance": "restricted"}, {"sensitivity": "public"}, "approve") == ok
}

test_every_violation_is_reported if {
	decide_as({"username": "ada", "groups": [], "clearance": "public"}, {}, "approve") == refusal([
		"requester cannot approve their own request",
		"reviewer ada is cleared for public data, and the request holds confidential data",
		"reviewer ada is not in the approver group reviewer",
	])
}

test_positive_rule_refuses_without_every_fact if {
	approval_decide.granted(deciding({}, {}, "approve"))
	approval_decide.granted(deciding({"username": " "}, {}, "approve")) == false
	approval_decide.granted(deciding({}, {"agent": 7}, "approve")) == false
	approval_decide.granted(object.remove(deciding({}, {}, "approve"), ["decision"])) == false
	approval_decide.granted({}) == false
}
