# edge_anytime: the two fresh-machine commands are `make demo` and `make test` (see README.md).
PY := .venv/bin/python
RUNTIME_PY := .venv-runtime/bin/python
BUNDLE := deploy/bundles/gtsrb-resann

.PHONY: setup setup-runtime demo test test-runtime test-slow bench clean

setup:
	@scripts/setup_env.sh full

setup-runtime:
	@scripts/setup_env.sh runtime

## The main job: replay real GTSRB test images through the shipped anytime bundle on real LiteRT
## under a sweep of deadlines and print budget -> exit reached, accuracy, deadline met.
demo: setup
	$(PY) -m simulator.replay --bundle $(BUNDLE) --demo

## Default test run (< 20 min on 2 cores): the runtime-only import check, then pytest without slow tests.
test: setup test-runtime
	$(PY) -m pytest -q

## `import edge_anytime` and a real LiteRT frame in a venv holding only numpy + ai-edge-litert.
test-runtime: setup-runtime
	$(RUNTIME_PY) scripts/runtime_smoke.py $(BUNDLE)

## Long tests: training runs, full conversions, soaks.
test-slow: setup
	$(PY) -m pytest -q -m slow

bench: setup
	$(PY) bench/run_all.py

clean:
	rm -rf .venv .venv-runtime
