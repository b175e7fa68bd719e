"""Registry use cases; every write is audited in its own transaction."""
