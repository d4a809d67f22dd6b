#!/usr/bin/env bash
# Builds stasis and runs the demo: a counter is checkpointed, ended, restored, and carries on.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-deps.sh
cargo build --release -q -p stasis-cli
exec ./target/release/stasis demo "$@"
