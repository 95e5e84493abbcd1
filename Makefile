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

bench:
	scripts/bootstrap.sh --dev
	.venv/bin/python bench/grpc_throughput.py

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache *.egg-info
