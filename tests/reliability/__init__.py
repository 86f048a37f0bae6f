"""The standing reliability suite (issue 11): fuzzing of every Serve route, bounded load per app, kill
tests for the worker pools and a Serve replica, node loss mid-sweep. docs/reliability.md says what each
test shows and how long it takes."""
