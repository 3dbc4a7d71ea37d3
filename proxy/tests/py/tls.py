"""Python drivers over TLS to pgsplit: psycopg (libpq) with verify-full,
by SSLRequest and by direct TLS negotiation, and asyncpg with a verifying
SSL context. Each reports the server that ran its read and whether its
own connection is encrypted.

Usage: tls.py HOST PORT DB CA_FILE REPLICA_PORT,REPLICA_PORT
"""

import asyncio
import ssl
import sys

import asyncpg
import psycopg

HOST, PORT, DB, CA = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
REPLICAS = {int(p) for p in sys.argv[5].split(",")}
READ = "SELECT inet_server_port()"


def check(what, port):
    if port not in REPLICAS:
        sys.exit(f"{what}: read ran on {port}, expected a replica {sorted(REPLICAS)}")


def psycopg_verify_full(negotiation):
    dsn = (f"host={HOST} port={PORT} dbname={DB} user=postgres password=postgres "
           f"sslmode=verify-full sslrootcert={CA} sslnegotiation={negotiation} "
           "channel_binding=require")
    with psycopg.connect(dsn, autocommit=True) as conn:
        if not conn.pgconn.ssl_in_use:
            sys.exit(f"psycopg ({negotiation}): the connection is not encrypted")
        check(f"psycopg ({negotiation})", conn.execute(READ).fetchone()[0])


async def asyncpg_verify():
    context = ssl.create_default_context(cafile=CA)
    conn = await asyncpg.connect(host=HOST, port=PORT, database=DB, user="postgres",
                                 password="postgres", ssl=context)
    try:
        # pgsplit runs with client_tls = "require": being served proves TLS.
        check("asyncpg", await conn.fetchval(READ))
    finally:
        await conn.close()


psycopg_verify_full("postgres")
psycopg_verify_full("direct")
asyncio.run(asyncpg_verify())
print("tls drivers ok")
