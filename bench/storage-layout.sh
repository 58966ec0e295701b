#!/usr/bin/env bash
# Storage layout measurements through SledLog directly (src/storage/layout_bench.rs):
# 100,000 topics with one message each (disk vs raw bytes, reopen time, publish rate to
# distinct topics vs one busy topic, a flush per 64 appends), and whether sled gives space
# back after retention deletes (1 GB written, trimmed, 1 GB more with trimming).
#
#   bench/storage-layout.sh                 # both
#   bench/storage-layout.sh many_topics     # one of them
#
# Environment: STARLING_BENCH_TOPICS (100000), STARLING_BENCH_MB (1024), STARLING_BENCH_DIR
# (where the temporary data directories go; default: the repository root).
set -euo pipefail
cd "$(dirname "$0")/.."
filter="storage::layout_bench::${1:-}"
# The measurements are built only with this cfg, so `cargo test` never runs them.
export RUSTFLAGS="${RUSTFLAGS:-} --cfg starling_bench"
exec cargo test --release --lib "$filter" -- --nocapture --test-threads 1
