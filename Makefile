# imgclass: `make run` serves, `make test` tests. Both set themselves up via `make install`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.install-stamp
SAMPLE := samples/cat.jpg
PYTEST_ARGS ?=

.PHONY: install model run test lint format bench clean

install: $(STAMP) model $(SAMPLE)

# Re-installs only when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[export,dev]' 2>&1 \
		| grep -v "is ignored: it is neither a file nor a directory" || true
	$(BIN)/python -c "import imgclass, torch, onnxruntime"  # fail here, not later, if it did not install
	touch $@

# `imgclass model export` is a no-op when the ONNX file already exists.
model: $(STAMP)
	$(BIN)/imgclass model export --precision fp32
	$(BIN)/imgclass model export --precision int8

$(SAMPLE): $(STAMP) scripts/make_samples.py
	$(BIN)/python scripts/make_samples.py samples

run: install
	$(BIN)/imgclass serve

lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts

format: $(STAMP)
	$(BIN)/ruff format src tests bench scripts
	$(BIN)/ruff check --fix src tests bench scripts

test: install lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# wrk (a C load generator) comes from Debian; installed here, not needed for tests.
bench: install
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) models samples .pytest_cache .ruff_cache
