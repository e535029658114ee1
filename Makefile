# The two commands of the README. Each sets itself up first (scripts/setup.sh is idempotent).
.PHONY: demo test setup

setup:
	@bash scripts/setup.sh

demo: setup
	@bash scripts/demo.sh

test: setup
	@.venv/bin/python -m pytest -n 2 -p no:cacheprovider
