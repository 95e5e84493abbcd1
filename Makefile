.PHONY: run test lint proto docs bench clean

# Install everything and run the server on its defaults (gRPC :9090, HTTP :8080).
run:
	scripts/bootstrap.sh
	.venv/bin/scaler

# Install everything (Debian packages included) and run the whole test suite.
test:
	scripts/test.sh

lint:
	.venv/bin/ruff check .
	.venv/bin/mypy

# Regenerate the protobuf stubs from protos/externalscaler.proto.
proto:
	.venv/bin/python scripts/gen_protos.py

# Regenerate the README's generated tables (settings, adapter metadata).
docs:
	.venv/bin/python scripts/update_readme.py

# Every benchmark in one run (~15 min on 2 cores), written to BENCHMARKS.md. Not part of `make test`.
# BENCH_PROFILE=<dir> also records py-spy profiles of the scaler under the cluster-scale load.
bench:
	scripts/system-deps.sh
	scripts/bootstrap.sh --dev
	.venv/bin/python bench/run_all.py

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache *.egg-info
