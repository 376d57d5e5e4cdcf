# The side-by-side benchmark (docs/benchmarks.md); tests are scripts/test.sh.
.PHONY: bench bench-smoke bench-cluster
bench:
	scripts/bench.sh
bench-smoke:
	scripts/bench.sh --smoke
# Cluster mode on Redis against one node (docs/benchmarks.md, section g).
bench-cluster:
	scripts/deps.sh test
	scripts/build.sh release
	node bench/cluster.mjs
