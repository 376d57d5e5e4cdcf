# The side-by-side benchmark (docs/benchmarks.md); tests are scripts/test.sh.
.PHONY: bench bench-smoke bench-cluster bench-durable
bench:
	scripts/bench.sh
bench-smoke:
	scripts/bench.sh --smoke
# Cluster mode on Redis against one node (docs/benchmarks.md, section g).
bench-cluster:
	scripts/deps.sh test
	scripts/build.sh release
	node bench/cluster.mjs
# --data-dir against memory mode, per --fsync, and start-up with 1,000,000
# stored events (docs/benchmarks.md, section h); also part of make bench.
bench-durable:
	scripts/deps.sh test
	scripts/build.sh release
	node bench/durable.mjs
