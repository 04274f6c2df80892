# shellcheck shell=bash
# Sourced by scripts/test and scripts/chaos (not run on its own): installs what a fresh
# Debian machine lacks, puts cargo on PATH, cds to the repository and sets MIX_ENV=test.

cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1

need=()
command -v erl >/dev/null || need+=(erlang-nox)
[ -e /usr/lib/erlang/usr/include/erl_nif.h ] || need+=(erlang-dev)
command -v elixir >/dev/null || need+=(elixir)
[ -x /usr/sbin/dnsmasq ] || need+=(dnsmasq-base)
# TLS distribution tests and their certificates (test/integration/tls_test.exs).
compgen -G "/usr/lib/erlang/lib/ssl-*" >/dev/null || need+=(erlang-ssl)
command -v openssl >/dev/null || need+=(openssl)
# `ip netns` and veth pairs: the partition fault and the Fly.io (IPv6) recipe test.
command -v ip >/dev/null || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing ${need[*]}"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)" >&2; exit 1; }

export MIX_ENV=test
step() { echo; echo "==> $*"; "$@"; }
