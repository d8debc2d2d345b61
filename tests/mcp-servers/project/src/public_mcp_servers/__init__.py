"""Nothing of ours: the servers are the dependencies (see pyproject.toml)."""
