#!/usr/bin/env bash
# Every check, in the order a developer would run them. Called by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "install"
bash ci/install.sh

step "leak baseline"
snapshot() {
  { ls -A /dev/shm 2>/dev/null | sed 's/^/posix /'
    awk 'NR>1 {print "shm " $1 " " $2}' /proc/sysvipc/shm 2>/dev/null
    awk 'NR>1 {print "sem " $1 " " $2}' /proc/sysvipc/sem 2>/dev/null
    awk 'NR>1 {print "msg " $1 " " $2}' /proc/sysvipc/msg 2>/dev/null
    ls -A "${TMPDIR:-/tmp}" 2>/dev/null | grep '^shmkit-test-' | sed 's/^/tmp /' || true
  } | sort
}
before=$(mktemp)
snapshot >"$before"

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo doc"
RUSTDOCFLAGS=-Dwarnings cargo doc --no-deps --workspace

step "bench/probes: the C probes still build (cc -Wall -Werror)"
for probe in bench/probes/*.c; do
  cc -O2 -Wall -Wextra -Werror -o /dev/null "$probe"
done

step "cargo test (debug)"
cargo test --workspace

step "cargo test (release: orderings show up when optimised)"
cargo test --workspace --release

step "loom: model-check the lock-free algorithms (LOOM_MAX_PREEMPTIONS=2)"
# A target directory of its own: --cfg loom would otherwise rebuild (and
# evict) the ordinary build artifacts.
RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom \
  cargo test -p shmkit --lib --release loom

step "miri: the code that makes no system call, with strict provenance"
if cargo +nightly miri --version >/dev/null 2>&1; then
  MIRIFLAGS="-Zmiri-strict-provenance" cargo +nightly miri test -p shmkit --lib
else
  echo "SKIPPED: no nightly toolchain with Miri on this machine (ci/install.sh could not install it)"
fi

step "fuzz: every cargo-fuzz target for 20 s"
if cargo +nightly fuzz --version >/dev/null 2>&1; then
  bash ci/fuzz.sh 20
else
  echo "SKIPPED: no nightly toolchain with cargo-fuzz on this machine (ci/install.sh could not install it)"
fi

step "leak check: no IPC object or temp file left by the tests"
after=$(mktemp)
snapshot >"$after"
if ! diff -u "$before" "$after"; then
  echo "the test suite leaked the objects marked + above" >&2
  exit 1
fi
echo "no leaks"
