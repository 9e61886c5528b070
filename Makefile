# imgclass: `make run` serves, `make test` tests. Both set themselves up via `make install`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.install-stamp
SAMPLE := samples/cat.jpg
# The charting library the pages serve themselves (npm registry, pinned by package-lock.json).
VENDOR := src/imgclass/web/static/vendor
CHARTJS := $(VENDOR)/chart.umd.min.js
# Swagger UI for /api/docs (npm's swagger-ui-dist, same lock file).
SWAGGER_UI := $(VENDOR)/swagger-ui/swagger-ui-bundle.js
NODE_STAMP := node_modules/.install-stamp
PYTEST_ARGS ?=

.PHONY: install model vendor run test lint format bench screenshots clean cluster cluster-down

install: $(STAMP) model $(SAMPLE) vendor

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

# `npm ci` installs exactly the locked versions into the git-ignored node_modules/; the app
# serves the copied browser build itself (no CDN, no bundler). `make vendor` needs only npm
# (not the virtualenv): the Dockerfile's `vendor` stage runs it too.
vendor: $(CHARTJS) $(SWAGGER_UI)

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(CHARTJS): $(NODE_STAMP)
	mkdir -p $(VENDOR)
	sed '/^\/\/# sourceMappingURL=/d' node_modules/chart.js/dist/chart.umd.min.js > $@.tmp
	cp node_modules/chart.js/LICENSE.md $(VENDOR)/chart.js.LICENSE.md
	mv $@.tmp $@

$(SWAGGER_UI): $(NODE_STAMP)
	mkdir -p $(VENDOR)/swagger-ui
	sed '/sourceMappingURL=/d' node_modules/swagger-ui-dist/swagger-ui.css > $(VENDOR)/swagger-ui/swagger-ui.css
	cp node_modules/swagger-ui-dist/LICENSE node_modules/swagger-ui-dist/NOTICE $(VENDOR)/swagger-ui/
	sed '/^\/\/# sourceMappingURL=/d' node_modules/swagger-ui-dist/swagger-ui-bundle.js > $@.tmp
	mv $@.tmp $@

run: install
	$(BIN)/imgclass serve

# N replicas behind nginx on PostgreSQL + Redis, with Prometheus (scripts/cluster.py); Ctrl-C
# stops it. `make cluster CLUSTER_ARGS=--detach` returns at once; `make cluster-down` stops that.
IMGCLASS_CLUSTER_REPLICAS ?= 3
CLUSTER_ARGS ?=
cluster: install
	command -v nginx >/dev/null && command -v prometheus >/dev/null || \
		(apt-get -o DPkg::Lock::Timeout=600 update -qq && \
		 apt-get -o DPkg::Lock::Timeout=600 install -y -qq nginx prometheus)
	$(BIN)/python -m scripts.cluster up --replicas $(IMGCLASS_CLUSTER_REPLICAS) $(CLUSTER_ARGS)

cluster-down:
	$(BIN)/python -m scripts.cluster down

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

# Regenerates docs/screenshots/*.png from a served instance with seeded demo data.
screenshots: install
	$(BIN)/python scripts/screenshots.py

clean:
	rm -rf $(VENV) models samples .pytest_cache .ruff_cache node_modules $(VENDOR)
