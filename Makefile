# The two commands of the README:  make serve  |  make test
# Each sets up .venv on first use (and again whenever pyproject.toml changes).
VENV ?= .venv
# pyproject extras: cpu is ONNX Runtime's CPU build (a GPU host may pass EXTRAS=dev,gpu)
EXTRAS ?= dev,cpu
PY := $(VENV)/bin/python
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: serve test lint bench-model venv clean

$(STAMP): pyproject.toml scripts/setup-venv.sh
	VENV=$(VENV) EXTRAS=$(EXTRAS) scripts/setup-venv.sh
	rm -f $(VENV)/.installed*
	touch $(STAMP)

venv: $(STAMP)

serve: $(STAMP)  ## serve the embedded default model on http://127.0.0.1:8000
	$(PY) -m service $(ARGS)

test: $(STAMP)  ## run the test suite (GPU tests skip without CUDA)
	scripts/install-browser.sh  # headless Chromium for the page's test, once (it skips without)
	$(PY) -m pytest $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .

bench-model: $(STAMP)
	$(PY) -m bench model $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
