# The side-by-side benchmark (docs/benchmarks.md); tests are scripts/test.sh.
.PHONY: bench bench-smoke bench-cluster bench-durable bench-agents
bench:
	scripts/bench.sh
bench-smoke:
	scripts/bench.sh --smoke
# Cluster mode on Redis against one node and the peers' clusters
# (docs/benchmarks.md, section g); also part of make bench.
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
# Agent-shaped load: many concurrent runs streaming small events, through the
# batch API and an exec agent, against the peers (docs/benchmarks.md, section i);
# also part of make bench.
bench-agents:
	scripts/deps.sh test
	scripts/build.sh release
	node bench/agents.mjs
