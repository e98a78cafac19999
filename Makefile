# make demo: embedded Valkey + the quickstart example (scripts/demo.sh)
# make test: venv, every server of the test matrix, pytest (scripts/test.sh)
.PHONY: demo test setup-servers

demo:
	scripts/demo.sh

test:
	scripts/test.sh $(PYTEST_ARGS)

setup-servers:
	scripts/setup-servers.sh
