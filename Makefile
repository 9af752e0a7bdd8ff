# The two commands of the README:  make serve  |  make test
# Each sets up .venv on first use (and again whenever pyproject.toml changes).
# make check: what CI runs (.ci/run): lint, format check, type check, then the tests.
VENV ?= .venv
# pyproject extras: cpu is ONNX Runtime's CPU build (a GPU host may pass EXTRAS=dev,gpu)
EXTRAS ?= dev,cpu
PY := $(VENV)/bin/python
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

# The typed packages; runtimes and training join once they exist (a missing one is not an error).
TYPED := $(wildcard models export service runtimes training)

.PHONY: serve test check lint format-check typecheck bench-model venv clean

$(STAMP): pyproject.toml scripts/setup-venv.sh
	VENV=$(VENV) EXTRAS=$(EXTRAS) scripts/setup-venv.sh
	rm -f $(VENV)/.installed*
	touch $(STAMP)

venv: $(STAMP)

serve: $(STAMP)  ## serve the embedded default model on http://127.0.0.1:8000
	$(PY) -m service $(ARGS)

test: $(STAMP)  ## run the test suite (GPU tests skip without CUDA)
	scripts/install-browser.sh  # headless Chromium for the page's test, once (it skips without)
	PY=$(PY) scripts/test.sh $(ARGS)

check: lint format-check typecheck test  ## everything CI checks, fastest first

lint: $(STAMP)
	$(PY) -m ruff check .

format-check: $(STAMP)  ## `ruff format` would change nothing (run it to fix)
	$(PY) -m ruff format --check .

typecheck: $(STAMP)
	$(PY) -m mypy $(TYPED)

bench-model: $(STAMP)
	$(PY) -m bench model $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
