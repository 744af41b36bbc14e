#!/usr/bin/env bash
# Builds every cargo-fuzz target in fuzz/ and runs each for SECONDS seconds
# (default 30): `ci/fuzz.sh [seconds-per-target]`. Exits non-zero on the
# first crash, leak, timeout or out-of-memory (libFuzzer's exit status);
# the input that did it is in fuzz/artifacts/TARGET/. Needs nightly and
# cargo-fuzz (`cargo install cargo-fuzz`). The targets are built the
# cargo-fuzz way: optimised, with debug assertions, overflow checks and
# AddressSanitizer. Corpora grow in fuzz/corpus/ (not committed).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${1:-30}"
case "$seconds" in
  '' | *[!0-9]*) echo "usage: ci/fuzz.sh [seconds-per-target]" >&2; exit 2 ;;
esac

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "ci/fuzz.sh: needs the nightly toolchain and cargo-fuzz (cargo install cargo-fuzz)" >&2
  exit 2
fi

# Leftovers of crashed runs would be named shmkit.*.shmkit-fuzz-PID-*;
# remember what was there before to check afterwards.
leftovers() { ls -A /dev/shm 2>/dev/null | grep -c 'shmkit-fuzz-' || true; }
before=$(leftovers)

targets=$(cargo +nightly fuzz list)
cargo +nightly fuzz build
for target in $targets; do
  printf '\n==> fuzz %s for %ss\n' "$target" "$seconds"
  mkdir -p "corpus/$target"
  # -timeout: one input taking 10 s is a hang (each case is bounded far
  # below that); -rss_limit_mb: a leak or runaway allocation.
  cargo +nightly fuzz run "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done

after=$(leftovers)
if [ "$after" != "$before" ]; then
  echo "ci/fuzz.sh: the targets left shared-memory objects in /dev/shm ($before before, $after after)" >&2
  ls -A /dev/shm | grep 'shmkit-fuzz-' >&2 || true
  exit 1
fi
echo "ci/fuzz.sh: every target ran ${seconds}s without a crash"
