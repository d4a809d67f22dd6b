#!/usr/bin/env bash
# Installs what the demo and the tests need and is missing (Debian 12). Idempotent.
set -euo pipefail
if [[ $(id -u) -ne 0 ]]; then
  echo "stasis: run as root (checkpoint/restore needs CAP_SYS_ADMIN and ptrace over any process)" >&2
  exit 1
fi
need=()
command -v cc >/dev/null || need+=(gcc libc6-dev)
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
if ((${#need[@]})); then
  echo "installing: ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi
if ! command -v cargo >/dev/null; then
  if [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "stasis: cargo (the Rust toolchain) is required: install it with rustup" >&2
    exit 1
  fi
fi
