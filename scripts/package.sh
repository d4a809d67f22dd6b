#!/usr/bin/env bash
# Builds the Debian package target/debian/stasis_VERSION-1_ARCH.deb: /usr/bin/stasis
# (stripped), man pages and shell completions generated from the CLI definition, the agent's
# systemd unit, the docs. Needs cargo-deb (`cargo install --locked cargo-deb`: installed here
# if missing). Prints the package's path on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-deps.sh demo
if ! cargo deb --version >/dev/null 2>&1; then
  echo "installing cargo-deb…" >&2
  cargo install --locked cargo-deb >&2
fi
target=$(cargo metadata --format-version 1 --no-deps | grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)
echo "building stasis (release)…" >&2
cargo build --release -p stasis-cli >&2
rm -rf "$target/release/pkg"
"$target/release/stasis" __gen-docs "$target/release/pkg" >&2
# Debian policy: man pages are installed compressed (gzip -n: no name or time stamp, so the
# package is reproducible).
gzip -9nf "$target/release/pkg/man/"*.1
cargo deb -p stasis-cli --no-build --strip "$@" | tail -n 1
