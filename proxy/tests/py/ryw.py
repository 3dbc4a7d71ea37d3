"""INSERT a unique row, then SELECT it at once, N times, through a real
driver; counts the reads that did not see the row just written.

Usage: ryw.py DSN psycopg|asyncpg N TABLE PRIMARY_PORT
Prints: misses=<n> replica_reads=<m>
"""

import asyncio
import sys

import asyncpg
import psycopg

DSN, DRIVER, N, TABLE, PRIMARY = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])


def with_psycopg():
    misses = replica = 0
    # prepare_threshold=0: both statements are server-side prepared.
    with psycopg.connect(DSN, autocommit=True, prepare_threshold=0) as conn:
        for i in range(N):
            conn.execute(f"INSERT INTO {TABLE} VALUES (%s)", (i,))
            n, port = conn.execute(f"SELECT count(*), inet_server_port() FROM {TABLE} WHERE id = %s", (i,)).fetchone()
            misses += n == 0
            replica += port != PRIMARY
    return misses, replica


async def with_asyncpg():
    misses = replica = 0
    conn = await asyncpg.connect(DSN)
    try:
        for i in range(N):
            await conn.execute(f"INSERT INTO {TABLE} VALUES ($1)", i)
            row = await conn.fetchrow(f"SELECT count(*), inet_server_port() FROM {TABLE} WHERE id = $1", i)
            misses += row[0] == 0
            replica += row[1] != PRIMARY
    finally:
        await conn.close()
    return misses, replica


misses, replica = with_psycopg() if DRIVER == "psycopg" else asyncio.run(with_asyncpg())
print(f"misses={misses} replica_reads={replica}")
