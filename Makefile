# make demo: embedded Valkey + the quickstart example (scripts/demo.sh)
# make test: venv, every server of the test matrix, pytest (scripts/test.sh)
# make lint: ruff and mypy (scripts/lint.sh)
# make smoke-wheel: build the wheel, install it in a bare venv, run the workflow (scripts/smoke-wheel.sh)
# make docs: regenerate docs/yaml-reference.md from schemas/desired-state.schema.json
.PHONY: demo test lint smoke-wheel docs setup-servers

demo:
	scripts/demo.sh

test:
	scripts/test.sh $(PYTEST_ARGS)

lint:
	scripts/lint.sh

smoke-wheel:
	scripts/smoke-wheel.sh

docs:
	scripts/gen-docs.sh

setup-servers:
	scripts/setup-servers.sh
