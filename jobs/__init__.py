"""Workload entrypoints: `python -m jobs.<name>` alone or under `ray job submit --working-dir . --`."""
