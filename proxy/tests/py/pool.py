"""100 concurrent tasks per driver over a small pgsplit pool: psycopg 3 with
server-side prepared statements (prepare_threshold=0) and asyncpg (which
prepares everything). Every statement must succeed, reads on replicas and
writes on the primary.

Usage: pool.py DSN PRIMARY_PORT
"""

import asyncio
import sys

import asyncpg
import psycopg

DSN, PRIMARY = sys.argv[1], int(sys.argv[2])
TASKS, ROUNDS = 100, 5


async def with_asyncpg(i):
    conn = await asyncpg.connect(DSN)
    try:
        for r in range(ROUNDS):
            port = await conn.fetchval("INSERT INTO apool VALUES ($1, $2) RETURNING inet_server_port()", i, r)
            assert port == PRIMARY, f"asyncpg insert ran on {port}"
            port = await conn.fetchval("SELECT inet_server_port() + $1::int * 0", r)
            assert port != PRIMARY, "asyncpg read ran on the primary"
            async with conn.transaction():
                await conn.execute("UPDATE apool SET r = r WHERE task = $1", i)
    finally:
        await conn.close()


async def with_psycopg(i):
    async with await psycopg.AsyncConnection.connect(DSN, autocommit=True, prepare_threshold=0) as conn:
        for r in range(ROUNDS):
            cur = await conn.execute("INSERT INTO ppool VALUES (%s, %s) RETURNING inet_server_port()", (i, r))
            port = (await cur.fetchone())[0]
            assert port == PRIMARY, f"psycopg insert ran on {port}"
            cur = await conn.execute("SELECT inet_server_port(), %s::int", (r,))
            assert (await cur.fetchone())[0] != PRIMARY, "psycopg read ran on the primary"


async def main():
    setup = await asyncpg.connect(DSN)
    await setup.execute("CREATE TABLE apool (task int, r int); CREATE TABLE ppool (task int, r int)")
    await setup.close()
    results = await asyncio.gather(
        *[with_asyncpg(i) for i in range(TASKS)],
        *[with_psycopg(i) for i in range(TASKS)],
        return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        sys.exit(f"{len(errors)} tasks failed, e.g. {errors[:3]!r}")
    check = await asyncpg.connect(DSN)
    counts = await check.fetchrow("/* pgsplit:primary */ SELECT (SELECT count(*) FROM apool), (SELECT count(*) FROM ppool)")
    await check.close()
    if tuple(counts) != (TASKS * ROUNDS, TASKS * ROUNDS):
        sys.exit(f"rows written: {tuple(counts)}")
    print("pool ok")


asyncio.run(main())
