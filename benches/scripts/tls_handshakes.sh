#!/usr/bin/env bash
# New TLS connections per second, and CPU per connection, through pgsplit
# and through PgBouncer 1.25 with the same certificate, side by side.
#
#   bash benches/scripts/tls_handshakes.sh [seconds per round, default 8] [rounds, default 3]
#
# Runs `pgsplit demo` (its self-signed certificate), puts PgBouncer in front
# of the same primary with that certificate, and runs `pgbench -C -S`
# (a new connection for every transaction: TCP, TLS handshake, SCRAM login,
# one SELECT) with sslmode=require against each, interleaved. CPU is the
# proxy process's user + system time over the round, from /proc.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-8}
rounds=${2:-3}
bouncer=${PGBOUNCER:-../shared/peers/pgbouncer-1.25.2/pgbouncer}
[ -x "$bouncer" ] || { echo "no PgBouncer at $bouncer (set PGBOUNCER)" >&2; exit 1; }
cargo build --release -q -p pgsplit
work=$(mktemp -d)
chmod 755 "$work"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
bport=$(free_port)
# Server connections are pooled on both sides and plaintext, as PgBouncer's.
target/release/pgsplit demo --listen "127.0.0.1:$port" --server-tls disable >"$work/demo.log" 2>&1 &
demo=$!
bpid=""
cleanup() {
    [ -n "$bpid" ] && kill -QUIT "$bpid" 2>/dev/null
    kill -INT $demo 2>/dev/null
    wait $demo 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 300); do grep -q "pgsplit is ready" "$work/demo.log" && break; sleep 0.2; done
grep -q "pgsplit is ready" "$work/demo.log" || { cat "$work/demo.log" >&2; exit 1; }
primary=$(awk '/^  primary/ {split($2, a, ":"); print a[2]}' "$work/demo.log")
cert=$(grep -o 'self-signed certificate [^;)]*' "$work/demo.log" | awk '{print $3}')
# PgBouncer runs as postgres and needs its own readable copy of the key.
cp "$cert" "$work/server.pem"
cp "${cert%.pem}.key" "$work/server.key"
# The role's SCRAM verifier, as pgsplit's config derives one at start: so
# PgBouncer too checks logins without a PBKDF2 per connection.
verifier=$(PGPASSWORD=postgres psql -h 127.0.0.1 -p "$primary" -U postgres -d postgres -Atc \
    "SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'")
printf '"postgres" "%s"\n' "$verifier" >"$work/userlist.txt"
cat >"$work/pgbouncer.ini" <<EOF
[databases]
postgres = host=127.0.0.1 port=$primary dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bport
auth_type = scram-sha-256
auth_file = $work/userlist.txt
pool_mode = transaction
default_pool_size = 20
max_client_conn = 1000
client_tls_sslmode = require
client_tls_cert_file = $work/server.pem
client_tls_key_file = $work/server.key
logfile = $work/pgbouncer.log
pidfile = $work/pgbouncer.pid
EOF
chown -R postgres "$work" 2>/dev/null || true
runuser -u postgres -- "$bouncer" -d "$work/pgbouncer.ini"
for _ in $(seq 50); do [ -s "$work/pgbouncer.pid" ] && break; sleep 0.1; done
bpid=$(cat "$work/pgbouncer.pid")
pgsplit_pid=$demo
export PGPASSWORD=postgres PGUSER=postgres PGHOST=127.0.0.1 PGDATABASE=postgres
PGSSLMODE=prefer pgbench -q -i -s 1 -p "$primary" >/dev/null 2>&1
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
round() { # name pid port
    local before after out tps n
    before=$(cpu "$2")
    out=$(PGSSLMODE=require pgbench -n -C -S -c 4 -j 2 -T "$secs" -p "$3" 2>&1)
    after=$(cpu "$2")
    tps=$(echo "$out" | awk '/^tps/ {print $3; exit}')
    n=$(echo "$out" | sed -n 's/.*actually processed: \([0-9]*\).*/\1/p')
    [ -n "$n" ] && [ "$n" -gt 0 ] || { echo "$1: pgbench failed: $out" >&2; return 1; }
    awk -v name="$1" -v tps="$tps" -v n="$n" -v t="$((after - before))" -v hz="$ticks" \
        'BEGIN { printf "%-9s %8.0f connections/s  %7.0f µs CPU per connection\n", name, tps, t / hz / n * 1e6 }'
}
echo "pgbench -n -C -S -c 4 -T $secs, sslmode=require, $rounds interleaved rounds"
for _ in $(seq "$rounds"); do
    round pgsplit "$pgsplit_pid" "$port"
    round pgbouncer "$bpid" "$bport"
done
