#!/usr/bin/env bash
# Runs the whole test suite as root against the real kernel: unit tests, image-format tests,
# and end-to-end checkpoint/restore tests of the self-verifying workloads and real programs.
# Tests that move pids around run serially (each integration test holds a global lock).
# Ends with one summary line: "summary: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-deps.sh test
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --all-targets --no-fail-fast "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
passed=$(grep -Eo '^test result: [A-Za-z]+\. [0-9]+ passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '^test result: [A-Za-z]+\. [0-9]+ passed; [0-9]+ failed' "$log" | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
echo
echo "summary: ${passed} passed, ${failed} failed"
if [[ $rc -eq 0 && ${passed} -eq 0 ]]; then
  echo "stasis: no test ran" >&2
  exit 1
fi
exit "$rc"
