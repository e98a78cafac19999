"""Helpers shared by the tests: running the CLI (`support.cli`), hand-made plans and desired
states for the executor (`support.executor`) and multi-node deployments (`support.cluster`).
Real servers are started by `servers.py`; contract servers for the managed APIs are the
`fake_*.py` modules."""
