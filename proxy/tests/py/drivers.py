"""Real Python drivers through pgsplit: reads must land on replicas and
writes on the primary. Each statement reports the server that ran it.

Usage: drivers.py DSN PRIMARY_PORT REPLICA_PORT,REPLICA_PORT
Exits non-zero with a message on the first wrong placement or error.
"""

import asyncio
import sys

import asyncpg
import psycopg

DSN, PRIMARY = sys.argv[1], int(sys.argv[2])
REPLICAS = {int(p) for p in sys.argv[3].split(",")}


def check(what, port, want_primary):
    ok = port == PRIMARY if want_primary else port in REPLICAS
    if not ok:
        sys.exit(f"{what}: ran on {port}, expected {'primary' if want_primary else 'a replica'} "
                 f"(primary {PRIMARY}, replicas {sorted(REPLICAS)})")


def psycopg_server_side_prepared():
    # prepare_threshold=0: every statement is prepared server-side (named
    # Parse, then Bind/Execute), the hardest case for a splitting proxy.
    with psycopg.connect(DSN, autocommit=True, prepare_threshold=0) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS py_items (id int primary key, v text)")
        seen = set()
        for i in range(20):
            row = conn.execute("SELECT inet_server_port(), %s::int", (i,)).fetchone()
            check("psycopg read", row[0], False)
            seen.add(row[0])
            row = conn.execute(
                "INSERT INTO py_items VALUES (%s, %s) RETURNING inet_server_port()", (i, "x")
            ).fetchone()
            check("psycopg insert", row[0], True)
        if seen != REPLICAS:
            sys.exit(f"psycopg reads used {seen}, not both replicas")
        # A transaction (psycopg's non-autocommit style) stays on the primary.
        with conn.transaction():
            row = conn.execute("SELECT inet_server_port() FROM py_items LIMIT 1").fetchone()
            check("psycopg read in a transaction", row[0], True)
        # A read-only transaction may use a replica.
        conn.read_only = True
        with conn.transaction():
            row = conn.execute("SELECT inet_server_port()").fetchone()
            check("psycopg read-only transaction", row[0], False)
        conn.read_only = False
        # Pipeline mode: several statements before one Sync.
        with conn.pipeline():
            cur1 = conn.execute("SELECT inet_server_port()")
            cur2 = conn.execute("SELECT inet_server_port(), 2")
        check("psycopg pipeline read 1", cur1.fetchone()[0], False)
        check("psycopg pipeline read 2", cur2.fetchone()[0], False)


async def asyncpg_everything_prepared():
    # asyncpg prepares every statement (Parse/Describe/Sync, then Bind/Execute).
    conn = await asyncpg.connect(DSN)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS apg_items (id int primary key, v text)")
        seen = set()
        for i in range(20):
            port = await conn.fetchval("SELECT inet_server_port() + $1::int * 0", i)
            check("asyncpg read", port, False)
            seen.add(port)
            port = await conn.fetchval(
                "INSERT INTO apg_items VALUES ($1, $2) RETURNING inet_server_port()", i, "y"
            )
            check("asyncpg insert", port, True)
        if seen != REPLICAS:
            sys.exit(f"asyncpg reads used {seen}, not both replicas")
        stmt = await conn.prepare("SELECT inet_server_port(), $1::text")
        for _ in range(6):
            row = await stmt.fetchrow("a")
            check("asyncpg explicit prepared read", row[0], False)
        async with conn.transaction():
            port = await conn.fetchval("SELECT inet_server_port()")
            check("asyncpg read in a transaction", port, True)
        async with conn.transaction(readonly=True):
            port = await conn.fetchval("SELECT inet_server_port()")
            check("asyncpg read-only transaction", port, False)
        # executemany: many Bind/Execute pairs before one Sync.
        await conn.executemany("INSERT INTO apg_items VALUES ($1, 'm')", [(i,) for i in range(100, 150)])
        n = await conn.fetchval("/* pgsplit:primary */ SELECT count(*) FROM apg_items WHERE v = 'm'")
        if n != 50:
            sys.exit(f"executemany inserted {n} rows, expected 50")
    finally:
        await conn.close()


psycopg_server_side_prepared()
asyncio.run(asyncpg_everything_prepared())
print("drivers ok")
