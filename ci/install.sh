#!/usr/bin/env bash
# Installs what the tests need beyond the Rust toolchain: a C compiler (the
# interoperability tests compile C programs) and util-linux's ipcs/ipcmk
# (the CLI's output is compared with them). Idempotent.
set -euo pipefail

missing=()
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
command -v ipcs >/dev/null 2>&1 || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing ${missing[*]} and not root: install them first" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

for component in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
    rustup component add "$component"
  fi
done

# Miri runs on nightly. A clean machine with rustup gets the component; a
# machine where nightly cannot be had skips the Miri step with a message
# (ci/all.sh checks again).
if ! cargo +nightly miri --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal --component miri,rust-src \
    || echo "warning: nightly with Miri could not be installed; the Miri step will be skipped" >&2
fi

# cargo-fuzz drives the fuzz targets in fuzz/ (nightly). Skipped with a
# message by ci/all.sh if it cannot be had.
if cargo +nightly --version >/dev/null 2>&1 && ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked \
    || echo "warning: cargo-fuzz could not be installed; the fuzz step will be skipped" >&2
fi

cargo --version
cc --version | head -1
cargo +nightly miri --version 2>/dev/null || true
