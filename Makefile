.PHONY: setup demo test test-slow bench
setup:
	bash scripts/setup.sh
demo: setup
	.venv/bin/python -m train fit -c configs/save/tiny.yaml --overwrite
test: setup
	.venv/bin/python -m pytest -q
test-slow: setup
	.venv/bin/python -m pytest -q -m slow
bench: setup
	.venv/bin/python scripts/benchmark.py save && .venv/bin/python scripts/benchmark.py stem
