#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (FUZZ_SECONDS each, default 20) on stable Rust.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-20}
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
for target in $(cargo fuzz list); do
  echo "fuzzing ${target} for ${seconds} s"
  cargo fuzz run "${target}" --sanitizer none -- -max_total_time="${seconds}" -rss_limit_mb=2048 -max_len=65536 2>&1 \
    | grep -E '^(Done|INFO: Seed|==|SUMMARY|panicked|thread)' || true
  if [ -n "$(ls -A "fuzz/artifacts/${target}" 2>/dev/null)" ]; then
    echo "error: fuzz target ${target} found a crash: fuzz/artifacts/${target}" >&2
    exit 1
  fi
done
