#!/usr/bin/env bash
# Load run: release builds, wrk at 64 connections against the status and access-token routes,
# with a bare axum hello server as the ceiling. SQLite always; PostgreSQL when
# GRANTRY_TEST_POSTGRES_URL is set. Prints a Markdown table for docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
cargo build --release --example hello
export HELLO_BIN="$PWD/target/release/examples/hello"
echo "machine: $(nproc) cores, $(free -h | awk '/Mem:/ {print $2}') memory, $(uname -srm)"
cargo bench --bench load
