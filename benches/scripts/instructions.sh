#!/usr/bin/env bash
# User-space instructions pgsplit executes per pgbench transaction, counted
# by callgrind: unlike timings, the count repeats on a noisy machine.
#
#   bash benches/scripts/instructions.sh [pgbench options]   # default: -S
#
# Plaintext on both hops by default, so figures compare across versions;
# PGSSLMODE=require measures TLS from pgbench to pgsplit, SERVER_TLS=require
# (or verify-full) TLS from pgsplit to the servers.
#
# Runs `pgsplit demo` (a primary, two replicas and the proxy) under
# callgrind, loads pgbench data into the primary, warms every pool up, then
# counts only the measured transactions (4 clients x 2 000).
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install -y valgrind)" >&2; exit 1; }
cargo build --release -q -p pgsplit
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" \
    target/release/pgsplit demo --listen "127.0.0.1:$port" --server-tls "${SERVER_TLS:-disable}" \
    >"$work/demo.log" 2>&1 &
demo=$!
trap 'kill -INT $demo 2>/dev/null; wait $demo 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 300); do grep -q "pgsplit is ready" "$work/demo.log" && break; sleep 0.2; done
grep -q "pgsplit is ready" "$work/demo.log" || { cat "$work/demo.log" >&2; exit 1; }
primary=$(awk '/^  primary/ {split($2, a, ":"); print a[2]}' "$work/demo.log")
# The demo offers TLS, which libpq takes by default (sslmode=prefer): the
# count is of the plaintext path unless PGSSLMODE says otherwise.
export PGPASSWORD=postgres PGUSER=postgres PGHOST=127.0.0.1 PGDATABASE=postgres
export PGSSLMODE="${PGSSLMODE:-disable}"
PGSSLMODE=prefer pgbench -q -i -s 1 -p "$primary" >/dev/null 2>&1
args=("$@"); [ ${#args[@]} -gt 0 ] || args=(-S)
pgbench -n -c 4 -t 500 "${args[@]}" -p "$port" >/dev/null
callgrind_control -z $demo >/dev/null 2>&1
pgbench -n -c 4 -t 2000 "${args[@]}" -p "$port" | grep -E '^tps' || true
callgrind_control -d $demo >/dev/null 2>&1
sleep 1
total=$(callgrind_annotate "$(ls -t "$work"/cg.out.* | head -1)" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "pgbench ${args[*]}: $((total / 8000)) instructions per transaction (user space, pgsplit process)"
