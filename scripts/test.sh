#!/usr/bin/env bash
# Runs the whole test suite as root against the real kernel: unit tests, image-format tests,
# and end-to-end checkpoint/restore tests of the self-verifying workloads and real programs.
# Tests that move pids around run serially (each integration test holds a global lock).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-deps.sh
cargo test --workspace --no-fail-fast "$@"
