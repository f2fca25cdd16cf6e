# One task runner. `make demo` runs the whole path locally; `make test` is what CI runs.
SHELL := /bin/bash
# uv from PATH, or the copy `make setup` installs with pip (runnable as a module).
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
DEMO_KAFKA_PORT ?= 19092
DEMO_KAFKA_DIR ?= $(HOME)/.cache/lynx-relay/demo-kafka
DEMO_S3_PORT ?= 19093
DEMO_S3_DIR ?= $(HOME)/.cache/lynx-relay/demo-s3

.PHONY: setup lint test unit demo schemas

setup:  ## install uv if missing, the locked environment, the Kafka jars, the AsyncAPI parser
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 \
	  || python3 -m pip install --quiet uv
	$(UV) sync --locked
	scripts/kafka fetch
	scripts/prometheus fetch
	scripts/s3proxy fetch
	@# Node 20+: the AsyncAPI project's parser checks schemas/asyncapi.json in the tests.
	npm ci --prefix tools/asyncapi-check --no-audit --no-fund

lint: setup  ## ruff, mypy --strict, import contracts, schemas up to date
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy
	$(UV) run lint-imports
	$(UV) run lynx-relay schemas --check

test: lint  ## everything CI checks: lint, then the whole suite on a real Kafka broker
	$(UV) run pytest

unit: setup  ## the fast tests that need neither Kafka nor a network port of ours
	$(UV) run pytest tests/unit

schemas: setup  ## regenerate schemas/ from service/messages.py
	$(UV) run lynx-relay schemas

demo: setup  ## local Kafka + S3Proxy + fal emulator + relay; publish the sample request, print its result
	@# A fresh broker each time: the relay remembers request ids, and the sample's is fixed.
	scripts/kafka stop --port $(DEMO_KAFKA_PORT) --dir $(DEMO_KAFKA_DIR) >/dev/null 2>&1 || true
	scripts/s3proxy stop --port $(DEMO_S3_PORT) --dir $(DEMO_S3_DIR) >/dev/null 2>&1 || true
	rm -rf $(DEMO_KAFKA_DIR) $(DEMO_S3_DIR)
	@# With the filesystem backend a bucket is a folder: the demo's bucket exists from the start.
	mkdir -p $(DEMO_S3_DIR)/data/demo-videos
	scripts/kafka start --port $(DEMO_KAFKA_PORT) --dir $(DEMO_KAFKA_DIR) >/dev/null
	scripts/s3proxy start --port $(DEMO_S3_PORT) --dir $(DEMO_S3_DIR) >/dev/null
	$(UV) run fal-emulator demo --bootstrap 127.0.0.1:$(DEMO_KAFKA_PORT) \
	  --output-endpoint http://127.0.0.1:$(DEMO_S3_PORT); \
	  status=$$?; scripts/kafka stop --port $(DEMO_KAFKA_PORT) --dir $(DEMO_KAFKA_DIR); \
	  scripts/s3proxy stop --port $(DEMO_S3_PORT) --dir $(DEMO_S3_DIR); exit $$status
