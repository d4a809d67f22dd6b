#!/usr/bin/env bash
# Installs what is missing (Debian 12) for one purpose, given as the first argument:
#   demo  the demo: a C toolchain to link Rust programs, and cargo
#   test  the whole test suite: also the programs the tests checkpoint (python3, redis,
#         postgresql, tmux), nftables and iproute2 (network tests), util-linux (mkswap),
#         chromium and chromedriver (the dashboard test), man-db and systemd-analyze (the
#         package test; cargo-deb itself is installed by scripts/package.sh)
# Idempotent; installs nothing that is present. Meant to be sourced (it may extend PATH).
set -euo pipefail
purpose=${1:-test}
if [[ $purpose != demo && $purpose != test ]]; then
  echo "ensure-deps.sh: unknown purpose '$purpose' (demo or test)" >&2
  exit 2
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "stasis: run as root (checkpoint/restore needs CAP_SYS_ADMIN and ptrace over any process)" >&2
  exit 1
fi
need=()
command -v cc >/dev/null || need+=(gcc libc6-dev)
if [[ $purpose == test ]]; then
  command -v python3 >/dev/null || need+=(python3)
  command -v mkswap >/dev/null || need+=(util-linux)
  command -v bash >/dev/null || need+=(bash)
  command -v nft >/dev/null || need+=(nftables)
  command -v redis-server >/dev/null || need+=(redis-server)
  command -v tmux >/dev/null || need+=(tmux)
  [[ -x /usr/lib/postgresql/15/bin/postgres ]] || need+=(postgresql)
  command -v ip >/dev/null || need+=(iproute2)
  [[ -x /usr/bin/chromium ]] || need+=(chromium)
  [[ -x /usr/bin/chromedriver ]] || need+=(chromium-driver)
  command -v man >/dev/null || need+=(man-db)
  command -v systemd-analyze >/dev/null || need+=(systemd)
fi
if ((${#need[@]})); then
  echo "installing for the $purpose: ${need[*]}" >&2
  apt-get update -qq
  # The demo takes nothing beyond what it lists (no recommended packages); the tests keep
  # Debian's defaults (chromium's fonts and the like are recommended packages).
  extra=()
  [[ $purpose == demo ]] && extra+=(--no-install-recommends)
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${extra[@]}" "${need[@]}" >&2
fi
if ! command -v cargo >/dev/null; then
  if [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "stasis: cargo (the Rust toolchain) is required: install it with rustup" >&2
    exit 1
  fi
fi
