"""The run engine: executes workflow steps under a lease, one checkpoint transaction per step."""
