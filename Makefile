# The side-by-side benchmark (docs/benchmarks.md); tests are scripts/test.sh.
.PHONY: bench bench-smoke
bench:
	scripts/bench.sh
bench-smoke:
	scripts/bench.sh --smoke
