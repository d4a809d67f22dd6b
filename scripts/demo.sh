#!/usr/bin/env bash
# Builds stasis and runs the demo: the node agent supervises a counter; killed, it comes back
# from its latest image with its count; killed again within the failover window, it is restarted
# cold from its boot command; each failure leaves an FFDC bundle.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-deps.sh demo
echo "building stasis (release; the first build takes a few minutes)…" >&2
cargo build --release -p stasis-cli
exec ./target/release/stasis demo "$@"
