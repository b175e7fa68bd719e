# Baton's default policy: least privilege, default deny.
package baton

import rego.v1

default allow := false

# An agent may call a tool only when the tool is on its allowed list with a wide enough scope.
allow if {
	input.decision_point == "tool.call"
	scope := input.agent.allowed_tools[input.tool.name]
	scope_rank[scope] >= scope_rank[input.tool.side_effect]
}

scope_rank := {"read": 0, "write": 1, "irreversible": 2}
