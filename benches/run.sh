#!/usr/bin/env bash
# Benchmarks lanyard: builds it in release mode, then runs the load generator, which starts
# lanyard on SQLite and on PostgreSQL, measures this machine's own RSA-2048 and argon2id
# limits, drives every endpoint and prints one table with the targets.
#
#   benches/run.sh                       # PostgreSQL from DATABASE_URL, else the local server
#   benches/run.sh --no-postgres         # SQLite only
#   benches/run.sh --seconds 10          # longer scenarios
#   benches/run.sh --replicas 1,2,3      # replicas on one PostgreSQL database (docs/scaling.md)
#   benches/run.sh --fill                # a filled database beside a fresh one, taking turns
#
# The micro-benchmarks (signing, token minting, password verification) are
# `cargo bench --bench micro`.
set -euo pipefail
cd "$(dirname "$0")/.."
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432}"
cargo build --release --quiet -p lanyard -p lanyard-load --bin lanyard --bin lanyard-load
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
exec "$target_dir/release/lanyard-load" --lanyard "$target_dir/release/lanyard" "$@"
