#!/usr/bin/env python3
"""Record real PostgreSQL traffic and turn it into seed corpora for the fuzz
targets in fuzz/fuzz_targets/.

    python3 fuzz/seed/record.py            # writes fuzz/corpus/<target>/
    python3 fuzz/seed/record.py --keep     # leave the scratch cluster's dir

What it does:
  1. initdb + pg_ctl start a scratch PostgreSQL on 127.0.0.1 (as the
     `postgres` OS user when run as root), with the roles the cluster crate
     uses: trustuser (trust), md5user/md5pass (md5), scramuser/scrampass
     (scram-sha-256), and a database `fuzzdb` owned by scramuser.
  2. Runs a relay on another port that forwards bytes unchanged and cuts both
     directions into messages (startup packets, the one-byte answer to an
     SSLRequest, tagged messages), remembering their order.
  3. Drives real clients through the relay: psql, pgbench (-S and
     tpcb-like; simple, extended and prepared), psycopg 3 and asyncpg.
  4. Writes deduplicated seed files:
       startup/       startup-phase packets as a client sent them
       frontend/      runs of client messages between two server replies
       backend/       runs of server messages between two client requests
       scram_server/  client-first NUL client-final (see the target's doc)
       scram_client/  server-first NUL server-final (see the target's doc)
       classifier/    SQL texts from Query and Parse, NUL-separated groups
       pipeline/      (op, tag) pairs of whole sessions, as the tracker sees them
Needs: initdb/pg_ctl/psql/pgbench on PATH, `pip install psycopg[binary] asyncpg`.
"""

import asyncio
import hashlib
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(os.path.dirname(HERE), "corpus")
MAX_FILE = 48 * 1024      # bytes per seed file
PER_TARGET = {"scram_server": 24, "scram_client": 24}   # seed files per target at most
DEFAULT_PER_TARGET = 80

SSL_CODE, GSS_CODE, CANCEL_CODE = 80877103, 80877104, 80877102


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --------------------------------------------------------------------------
# A scratch PostgreSQL

class Postgres:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="pgsplit-fuzz-record-")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")

    def run(self, *args, **kw):
        cmd = list(args)
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        return subprocess.run(cmd, check=True, cwd=self.dir, **kw)

    def start(self):
        pwfile = os.path.join(self.dir, "pw")
        with open(pwfile, "w") as f:
            f.write("postgres\n")
        if self.as_root:
            shutil.chown(pwfile, "postgres", "postgres")
        self.run("initdb", "-D", self.data, "-U", "postgres", "--pwfile", pwfile,
                 "--auth-local=trust", "--auth-host=scram-sha-256",
                 stdout=subprocess.DEVNULL)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                    f"unix_socket_directories = '{self.dir}'\nfsync = off\n"
                    "password_encryption = 'scram-sha-256'\nmax_connections = 50\n")
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
            f.write("local all all trust\n"
                    "host all trustuser 127.0.0.1/32 trust\n"
                    "host all md5user 127.0.0.1/32 md5\n"
                    "host all all 127.0.0.1/32 scram-sha-256\n")
        self.run("pg_ctl", "-D", self.data, "-w", "-l", os.path.join(self.dir, "log"),
                 "start", stdout=subprocess.DEVNULL)
        self.sql("CREATE ROLE trustuser LOGIN CREATEDB",
                 "SET password_encryption = 'md5'",
                 "CREATE ROLE md5user LOGIN PASSWORD 'md5pass'",
                 "SET password_encryption = 'scram-sha-256'",
                 "CREATE ROLE scramuser LOGIN CREATEDB PASSWORD 'scrampass'")
        self.sql("CREATE DATABASE fuzzdb OWNER scramuser")
        self.sql("GRANT ALL ON SCHEMA public TO PUBLIC", db="fuzzdb")

    def sql(self, *stmts, db="postgres"):
        args = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.dir,
                "-p", str(self.port), "-U", "postgres", "-d", db]
        for s in stmts:
            args += ["-c", s]
        self.run(*args, stdout=subprocess.DEVNULL)

    def stop(self, keep=False):
        try:
            self.run("pg_ctl", "-D", self.data, "-m", "fast", "stop",
                     stdout=subprocess.DEVNULL)
        finally:
            if not keep:
                shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------
# The recording relay

class Session:
    def __init__(self):
        self.events = []          # (direction 'F'/'B', kind, bytes)
        self.fe = bytearray()
        self.be = bytearray()
        self.fe_startup = True
        self.be_single = 0

    def feed_fe(self, data):
        self.fe += data
        while True:
            if self.fe_startup:
                if len(self.fe) < 8:
                    return
                n = struct.unpack("!I", self.fe[:4])[0]
                if n < 8 or n > 10000:
                    self.fe.clear()
                    return
                if len(self.fe) < n:
                    return
                pkt = bytes(self.fe[:n])
                del self.fe[:n]
                code = struct.unpack("!I", pkt[4:8])[0]
                if code in (SSL_CODE, GSS_CODE):
                    self.be_single += 1
                elif code != CANCEL_CODE:
                    self.fe_startup = False
                self.events.append(("F", "startup", pkt))
            else:
                if len(self.fe) < 5:
                    return
                n = struct.unpack("!I", self.fe[1:5])[0]
                if len(self.fe) < n + 1:
                    return
                msg = bytes(self.fe[:n + 1])
                del self.fe[:n + 1]
                self.events.append(("F", "msg", msg))

    def feed_be(self, data):
        self.be += data
        while True:
            if self.be_single:
                if not self.be:
                    return
                self.events.append(("B", "single", bytes(self.be[:1])))
                del self.be[:1]
                self.be_single -= 1
                continue
            if len(self.be) < 5:
                return
            n = struct.unpack("!I", self.be[1:5])[0]
            if len(self.be) < n + 1:
                return
            msg = bytes(self.be[:n + 1])
            del self.be[:n + 1]
            self.events.append(("B", "msg", msg))


class Relay:
    def __init__(self, upstream_port):
        self.upstream = upstream_port
        self.port = free_port()
        self.sessions = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait()

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", self.port))
        self.ready.set()
        self.loop.run_forever()

    async def _client(self, cr, cw):
        session = Session()
        self.sessions.append(session)
        try:
            sr, sw = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            cw.close()
            return

        async def pump(reader, writer, feed):
            try:
                while True:
                    data = await reader.read(65536)
                    if not data:
                        break
                    feed(data)
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                try:
                    writer.close()
                except Exception:
                    pass

        await asyncio.gather(pump(cr, sw, session.feed_fe), pump(sr, cw, session.feed_be))

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


# --------------------------------------------------------------------------
# Clients

PSQL_SCRIPT = r"""
SELECT 1;
SELECT 1 AS a, 'two' AS b, NULL AS c, now() AS d, 1.5::numeric AS e;
CREATE TABLE IF NOT EXISTS t (id serial PRIMARY KEY, v text, n int, j jsonb);
INSERT INTO t (v, n, j) VALUES ('a', 1, '{"k": 1}'), ('b', 2, NULL) RETURNING id;
UPDATE t SET n = n + 1 WHERE v = 'a';
DELETE FROM t WHERE v = 'zzz';
BEGIN;
SELECT * FROM t WHERE id = 1 FOR UPDATE;
SAVEPOINT s1;
SELECT 1/0;
ROLLBACK TO SAVEPOINT s1;
COMMIT;
BEGIN READ ONLY; SELECT count(*) FROM t; COMMIT;
SET search_path = public, pg_catalog;
SET application_name = 'fuzz-seed';
SHOW search_path;
RESET ALL;
SELECT nextval('t_id_seq');
SELECT pg_advisory_lock(1), pg_advisory_unlock(1);
SELECT set_config('work_mem', '8MB', false);
\copy t (v, n) FROM STDIN
x	10
y	20
\.
COPY t TO STDOUT;
COPY (SELECT id, v FROM t ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER);
SELECT * FROM generate_series(1, 30) g;
SELECT repeat('x', 300) AS long_text;
WITH w AS (INSERT INTO t (v) VALUES ('cte') RETURNING id) SELECT * FROM w;
EXPLAIN SELECT * FROM t WHERE id = 1;
EXPLAIN ANALYZE SELECT count(*) FROM t;
LISTEN ch; NOTIFY ch, 'hello'; UNLISTEN *;
DO $$ BEGIN RAISE NOTICE 'notice from DO'; END $$;
SELECT * FROM no_such_table;
SELCT syntax error;
PREPARE p(int) AS SELECT $1 + 1; EXECUTE p(41); DEALLOCATE p;
BEGIN; DECLARE c CURSOR FOR SELECT * FROM generate_series(1, 5); FETCH 2 FROM c; CLOSE c; COMMIT;
SELECT '' ;
;
VALUES (1, 'a'), (2, 'b');
TABLE t;
SELECT array_agg(id), json_agg(v) FROM t;
\d t
\dt
\df pg_sleep
SELECT pg_sleep(0.01);
DISCARD ALL;
"""


def run_clients(pg, relay):
    env = dict(os.environ, PGHOST="127.0.0.1", PGPORT=str(relay.port), PGDATABASE="fuzzdb")
    scram = dict(env, PGUSER="scramuser", PGPASSWORD="scrampass")
    md5 = dict(env, PGUSER="md5user", PGPASSWORD="md5pass")
    trust = dict(env, PGUSER="trustuser")
    direct = dict(scram, PGPORT=str(pg.port))
    def sh(args, e, label=None, **kw):
        r = subprocess.run(args, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
        print(f"  {label or ' '.join(args)} -> exit {r.returncode}", file=sys.stderr)
        if r.returncode and label:
            print("    " + r.stderr.decode(errors="replace").strip().splitlines()[-1], file=sys.stderr)

    print("psql", file=sys.stderr)
    sh(["psql", "-X", "-f", "-"], scram, "psql script", input=PSQL_SCRIPT.encode())
    sh(["psql", "-X", "-c", "SELECT current_user, version()"], md5)
    sh(["psql", "-X", "-c", "SELECT 1; SELECT 2"], trust)
    sh(["psql", "-X", "-c", "SELECT 1"], dict(scram, PGPASSWORD="wrong"))
    sh(["psql", "-X", "-c", "SELECT 1"], dict(scram, PGSSLMODE="disable", PGAPPNAME="seed app",
                                               PGOPTIONS="-c search_path=public"))
    sh(["psql", "-X", "-c", "SELECT 1"], dict(scram, PGGSSENCMODE="prefer", PGSSLMODE="prefer"))
    sh(["psql", "-X", "-c", "SELECT 1"], dict(scram, PGUSER="nosuchuser"))

    print("pgbench", file=sys.stderr)
    sh(["pgbench", "-i", "-s", "1", "-q"], direct)   # bulk COPY stays off the relay
    for mode in ("simple", "extended", "prepared"):
        sh(["pgbench", "-n", "-S", "-M", mode, "-c", "2", "-t", "15"], scram)
        sh(["pgbench", "-n", "-M", mode, "-c", "2", "-t", "8"], scram)

    print("psycopg", file=sys.stderr)
    sh([sys.executable, "-c", PSYCOPG], scram, "psycopg script")
    print("asyncpg", file=sys.stderr)
    sh([sys.executable, "-c", ASYNCPG], scram, "asyncpg script")
    # A cancel request through the relay, and a session cut mid-way.
    sh([sys.executable, "-c", CANCEL], scram, "psycopg cancel")


PSYCOPG = r"""
import os, psycopg
from psycopg import sql
conn = psycopg.connect(host=os.environ["PGHOST"], port=os.environ["PGPORT"],
                       user="scramuser", password="scrampass", dbname="fuzzdb",
                       application_name="psycopg-seed")
cur = conn.cursor()
cur.execute("CREATE TABLE IF NOT EXISTS p (id int PRIMARY KEY, v text, b bytea, f float8)")
cur.execute("SELECT %s::int + %s, %s::text, %s::bytea", (1, 2, "x", b"\x00\x01"))
cur.fetchall()
cur.executemany("INSERT INTO p VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                [(i, f"v{i}", bytes([i]), i / 3) for i in range(20)])
cur.execute("SELECT * FROM p WHERE id = %s", (3,), prepare=True)
for i in range(6):
    cur.execute("SELECT * FROM p WHERE id = %s", (i,), prepare=True)
    cur.fetchone()
cur.execute("SELECT * FROM p WHERE id = ANY(%s)", ([1, 2, 3],))
cur.fetchall()
with conn.cursor(binary=True) as bc:
    bc.execute("SELECT id, v, b, f, now() FROM p ORDER BY id LIMIT 5")
    bc.fetchall()
with conn.cursor(name="named") as nc:
    nc.execute("SELECT * FROM p")
    nc.fetchmany(3)
conn.commit()
with cur.copy("COPY p (id, v) FROM STDIN") as cp:
    for i in range(100, 110):
        cp.write_row((i, f"c{i}"))
with cur.copy("COPY (SELECT * FROM p LIMIT 5) TO STDOUT") as cp:
    for row in cp.rows():
        pass
with cur.copy("COPY p (id, v) FROM STDIN (FORMAT BINARY)") as cp:
    cp.set_types(["int4", "text"])
    cp.write_row((200, "bin"))
conn.commit()
try:
    cur.execute("SELECT * FROM p WHERE id = %s::int", ("not a number",))
except psycopg.Error:
    conn.rollback()
with conn.pipeline():
    for i in range(5):
        cur.execute("INSERT INTO p (id, v) VALUES (%s, %s) ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v", (300 + i, "pipe"))
    cur.execute("SELECT count(*) FROM p")
conn.commit()
cc = psycopg.ClientCursor(conn)
cc.execute("SELECT %s, %s", ("client-side", 42))
cc.execute(sql.SQL("SELECT {} FROM {}").format(sql.Identifier("v"), sql.Identifier("p")))
cc.close()
conn.commit()
conn.autocommit = True
cur.execute("LISTEN psy")
cur.execute("NOTIFY psy, 'x'")
cur.execute("SET TIME ZONE 'UTC'")
cur.execute("SELECT 1; SELECT 2")
with conn.transaction():
    cur.execute("UPDATE p SET f = f + 1 WHERE id = %s", (1,))
    with conn.transaction():
        cur.execute("SELECT pg_current_wal_lsn()")
big = [(10000 + i, "b") for i in range(600)]
cur.execute("INSERT INTO p (id, v) VALUES " + ",".join(["(%s, %s)"] * len(big)) + " ON CONFLICT DO NOTHING",
            [x for row in big for x in row])
conn.close()
"""

ASYNCPG = r"""
import asyncio, os, asyncpg
async def main():
    c = await asyncpg.connect(host=os.environ["PGHOST"], port=int(os.environ["PGPORT"]),
                              user="scramuser", password="scrampass", database="fuzzdb")
    await c.execute("CREATE TABLE IF NOT EXISTS a (id int PRIMARY KEY, v text, ts timestamptz, arr int[])")
    await c.execute("INSERT INTO a VALUES (1, 'x', now(), '{1,2}') ON CONFLICT DO NOTHING")
    await c.fetch("SELECT * FROM a WHERE id = $1", 1)
    await c.fetchrow("SELECT $1::text || $2::text AS s", "a", "b")
    await c.fetchval("SELECT count(*) FROM a")
    st = await c.prepare("SELECT * FROM a WHERE id > $1 ORDER BY id")
    await st.fetch(0)
    await c.executemany("INSERT INTO a (id, v) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                        [(i, str(i)) for i in range(2, 30)])
    async with c.transaction():
        async for r in c.cursor("SELECT * FROM a"):
            pass
        cur = await c.cursor("SELECT generate_series(1, 100)")
        await cur.fetch(10)
    await c.copy_records_to_table("a", records=[(500 + i, "copy", None, [i]) for i in range(10)],
                                  columns=["id", "v", "ts", "arr"])
    await c.copy_from_query("SELECT * FROM a LIMIT 3", output=lambda data: asyncio.sleep(0))
    try:
        await c.execute("INSERT INTO a (id) VALUES (1)")
    except asyncpg.PostgresError:
        pass
    try:
        await c.fetch("SELECT $1::int", "nope")
    except Exception:
        pass
    try:
        async with c.transaction(isolation="serializable", readonly=True):
            await c.fetch("SELECT * FROM a LIMIT 2")
    except asyncpg.PostgresError:
        pass
    await c.execute("SET statement_timeout = 1000; SELECT 1")
    await c.add_listener("ach", lambda *a: None)
    await c.execute("NOTIFY ach, 'y'")
    await c.fetch("SELECT $1::jsonb, $2::numeric, $3::bytea, $4::uuid", '{"a": 1}', 1, b"ab",
                  "00000000-0000-0000-0000-000000000001")
    await c.close()
asyncio.run(main())
"""

CANCEL = r"""
import os, threading, time, psycopg
conn = psycopg.connect(host=os.environ["PGHOST"], port=os.environ["PGPORT"],
                       user="scramuser", password="scrampass", dbname="fuzzdb")
threading.Timer(0.3, conn.cancel).start()
try:
    conn.execute("SELECT pg_sleep(5)")
except psycopg.Error:
    pass
conn.close()
"""


# --------------------------------------------------------------------------
# Seeds

class Seeds:
    def __init__(self):
        self.files = {}      # target -> {digest: bytes}
        self.shapes = {}     # target -> set of shape keys

    def add(self, target, data, shape=None):
        if not data or len(data) > MAX_FILE:
            return
        d = self.files.setdefault(target, {})
        shapes = self.shapes.setdefault(target, set())
        if shape is not None:
            if shape in shapes:
                return
            shapes.add(shape)
        d.setdefault(hashlib.sha1(data).hexdigest(), data)

    def write(self):
        rng = random.Random(13)
        for target, files in sorted(self.files.items()):
            out = os.path.join(CORPUS, target)
            shutil.rmtree(out, ignore_errors=True)
            os.makedirs(out)
            items = sorted(files.items())
            limit = PER_TARGET.get(target, DEFAULT_PER_TARGET)
            if len(items) > limit:
                items = rng.sample(items, limit)
            for digest, data in items:
                with open(os.path.join(out, "seed-" + digest[:16]), "wb") as f:
                    f.write(data)
            size = sum(len(d) for _, d in items)
            print(f"{target}: {len(items)} files, {size} bytes", file=sys.stderr)


def cap(msgs, limit=MAX_FILE):
    """Keeps whole messages; long runs of rows are cut to head and tail."""
    if sum(map(len, msgs)) <= limit:
        return msgs
    head, tail = msgs[:12], msgs[-3:]
    out = [m for m in head + tail if len(m) <= limit // 16]
    return out


def shape_of(msgs):
    # Tag sequence with runs collapsed: one seed per distinct conversation shape.
    tags = bytearray()
    for m in msgs:
        if len(tags) >= 2 and tags[-1] == m[0] and tags[-2] == m[0]:
            continue
        tags.append(m[0])
    return bytes(tags)


def sasl(body):
    code = struct.unpack("!i", body[:4])[0]
    return code, body[4:]


def seeds_from(session, seeds):
    startup = [p for d, k, p in session.events if k == "startup"]
    for p in startup:
        seeds.add("startup", p)
    if len(startup) > 1:
        seeds.add("startup", b"".join(startup))

    # Runs of messages in one direction.
    runs, cur, cur_dir = [], [], None
    for d, k, p in session.events:
        if k != "msg":
            continue
        if d != cur_dir and cur:
            runs.append((cur_dir, cur))
            cur = []
        cur_dir = d
        cur.append(p)
    if cur:
        runs.append((cur_dir, cur))
    for d, msgs in runs:
        msgs = cap(msgs)
        target = "frontend" if d == "F" else "backend"
        seeds.add(target, b"".join(msgs), shape=(shape_of(msgs), msgs[0][:48]))

    # SCRAM exchange.
    fe_p = [p[5:] for d, k, p in session.events if d == "F" and k == "msg" and p[0:1] == b"p"]
    be_r = [sasl(p[5:]) for d, k, p in session.events if d == "B" and k == "msg" and p[0:1] == b"R"]
    cont = [b for c, b in be_r if c == 11]
    fin = [b for c, b in be_r if c == 12]
    if len(fe_p) >= 2 and cont and fe_p[0].startswith(b"SCRAM-SHA-256\0"):
        init = fe_p[0][len(b"SCRAM-SHA-256\0"):]
        client_first = init[4:4 + struct.unpack("!i", init[:4])[0]]
        client_final = fe_p[1]
        server_first = cont[0]
        server_final = fin[0] if fin else b"e=invalid-proof"
        cnonce = client_first.split(b"r=", 1)[1].split(b",")[0]
        snonce = server_first.split(b"r=", 1)[1].split(b",")[0]
        templ = client_final.replace(snonce, b"@N")
        seeds.add("scram_server", client_first + b"\0" + templ)
        seeds.add("scram_server", client_first + b"\0" + templ.rsplit(b",p=", 1)[0] + b",p=@P")
        seeds.add("scram_server", client_first + b"\0" + client_final)
        sfirst = server_first.replace(cnonce, b"@N", 1)
        seeds.add("scram_client", sfirst + b"\0" + server_final)
        seeds.add("scram_client", sfirst + b"\0v=@V")
        seeds.add("scram_client", server_first + b"\0" + server_final)
        seeds.add("scram_client", sfirst + b"\0e=invalid-proof")

    # SQL texts.
    sqls = []
    for d, k, p in session.events:
        if d != "F" or k != "msg":
            continue
        body = p[5:]
        if p[0:1] == b"Q":
            sqls.append(body.rstrip(b"\0"))
        elif p[0:1] == b"P":
            parts = body.split(b"\0")
            if len(parts) > 1:
                sqls.append(parts[1])
    uniq = list(dict.fromkeys(s for s in sqls if s and len(s) < 4096))
    for s in uniq:
        seeds.add("classifier", s)
    for i in range(0, len(uniq), 4):
        seeds.add("classifier", b"\0".join(uniq[i:i + 4]))

    # Tracker sequences: whole sessions after startup, in arrival order.
    pairs = bytearray()
    for d, k, p in session.events:
        if k != "msg":
            continue
        op = b">" if d == "F" else b"<"
        if len(pairs) >= 4 and pairs[-4:] == (op + p[:1]) * 2:
            continue   # collapse DataRow / CopyData runs
        pairs += op + p[:1]
    for i in range(0, len(pairs), 512):
        chunk = bytes(pairs[i:i + 512])
        seeds.add("pipeline", chunk, shape=chunk)


HANDMADE_PIPELINE = [
    # The tracker's own unit-test scenarios, with injected (#) and synthetic (~) requests.
    b">P>B>E#P>B>E>S<1<2<D<C<1<2<D<C<Z",
    b">P>B>E#P>S>P>S<1<E<Z<1<Z",
    b"#Q>P>D>S>B>E>S<S<C<C<Z<1<t<T<Z<2<G<n<C<Z",
    b">B>E>S<2<G>c>S~3>S<C<Z<Z",
    b">Q>Q<G>c<C<Z",
    b"~1>B~3<2<E>S<Z",
    b"#P>B>S<E<Z#Q<C<A<Z",
    b">E>E>S<D<D<s<I<Z!!>Q<T<D<C<Z",
]


def main():
    keep = "--keep" in sys.argv
    pg = Postgres()
    pg.start()
    relay = Relay(pg.port)
    try:
        run_clients(pg, relay)
        time.sleep(0.5)
    finally:
        relay.stop()
        pg.stop(keep)
    seeds = Seeds()
    for s in relay.sessions:
        seeds_from(s, seeds)
    for p in HANDMADE_PIPELINE:
        seeds.add("pipeline", p)
    print(f"{len(relay.sessions)} sessions recorded", file=sys.stderr)
    seeds.write()


if __name__ == "__main__":
    main()
