# The side-by-side benchmark (docs/benchmarks.md); tests are scripts/test.sh.
.PHONY: bench bench-smoke bench-cluster bench-durable bench-agents bench-lock
bench:
	scripts/bench.sh
bench-smoke:
	scripts/bench.sh --smoke
# Cluster mode on Redis: two agentwire nodes against one, and against the peers'
# clusters on Redis (Socket.IO with @socket.io/redis-adapter on two node
# processes, nchan on two nginx instances); deliveries/s, cross-node latency,
# Redis CPU and memory per 1,000 events (docs/benchmarks.md, section g); also
# part of make bench. --quick (tiny, under a minute) runs in scripts/test.sh.
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
# The one lock under the fan-out benchmark: hold, wait and the ceiling it puts
# on deliveries/s, from an AW_LOCK_STATS build (docs/architecture.md, "The
# lock, and many cores"); not part of make bench.
bench-lock:
	scripts/deps.sh test
	scripts/build.sh release
	cmake -S . -B build-lockstat -DCMAKE_BUILD_TYPE=Release -DAW_LOCK_STATS=ON -DAW_WERROR=ON
	cmake --build build-lockstat --target agentwire -j"$$(nproc)"
	node bench/lockstat.mjs
