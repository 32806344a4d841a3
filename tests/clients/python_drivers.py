"""Real Python drivers through pgshard (transaction pooling, 3 shards): psycopg2, psycopg 3
with server-side prepared statements, asyncpg with its statement cache, and the SQLAlchemy
ORM. Each asserts results. Run with /usr/bin/python3 (Debian's packages)."""
import asyncio
import decimal
import os
import select
import time
import sys

HOST = os.environ["PGSHARD_HOST"]
PORT = int(os.environ["PGSHARD_PORT"])
DSN = f"host={HOST} port={PORT} user=app password=secret dbname=app"
D = decimal.Decimal
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what, file=sys.stderr)


def expected_orders(user):
    return [(user * 10 + k, D(f"{k}.25")) for k in range(1, 4)]


def psycopg2_suite():
    import psycopg2

    conn = psycopg2.connect(DSN)
    conn.autocommit = True
    cur = conn.cursor()
    ids = list(range(1001, 1011))
    cur.execute("delete from orders where user_id = any(%s)", (ids,))
    cur.execute("delete from users where id = any(%s)", (ids,))
    # One transaction per user: all its rows live on one shard.
    conn.autocommit = False
    for u in ids:
        cur.execute("insert into users (id, name, email) values (%s, %s, %s)", (u, f"user{u}", None))
        for oid, amount in expected_orders(u):
            cur.execute("insert into orders (id, user_id, amount) values (%s, %s, %s)", (oid, u, amount))
        conn.commit()
    # A rolled-back transaction leaves nothing.
    cur.execute("insert into users (id, name) values (1999, 'ghost')")
    conn.rollback()
    cur.execute("select count(*) from users where id = 1999")
    check(cur.fetchone()[0] == 0, "psycopg2: rolled-back insert is gone")
    conn.commit()
    # Reads by key.
    cur.execute("select id, amount from orders where user_id = %s order by id", (1003,))
    check(cur.fetchall() == expected_orders(1003), "psycopg2: orders of one user")
    conn.commit()
    # A cross-shard report in a fresh transaction (psycopg2 opens one for every statement).
    cur.execute(
        "select count(*), sum(amount), avg(amount) from orders where user_id between 1001 and 1010")
    n, total, mean = cur.fetchone()
    check(n == 30, f"psycopg2: report count {n}")
    check(total == D("67.50"), f"psycopg2: report sum {total}")
    check(mean == D("2.2500000000000000"), f"psycopg2: report avg {mean}")
    # One transaction across shards (two-phase commit): move an order between users.
    cur.execute("update orders set amount = amount + 1 where user_id = %s and id = %s", (1001, 10011))
    cur.execute("update orders set amount = amount - 1 where user_id = %s and id = %s", (1002, 10021))
    conn.commit()
    cur.execute("select sum(amount) from orders where user_id in (1001, 1002)")
    check(cur.fetchone()[0] == D("13.50"), "psycopg2: cross-shard transaction keeps the sum")
    conn.commit()
    cur.execute(
        "select user_id, sum(amount) from orders where user_id between 1001 and 1010 "
        "group by user_id order by user_id desc limit 3")
    check(cur.fetchall() == [(u, D("6.75")) for u in (1010, 1009, 1008)], "psycopg2: grouped report")
    conn.commit()
    conn.close()


def psycopg3_suite():
    import psycopg

    # prepare_threshold=0: every statement is prepared on the server (named statements).
    with psycopg.connect(DSN, autocommit=True, prepare_threshold=0) as conn:
        ids = list(range(1101, 1111))
        conn.execute("delete from orders where user_id = any(%s)", (ids,))
        conn.execute("delete from users where id = any(%s)", (ids,))
        for u in ids:
            with conn.transaction():
                conn.execute("insert into users (id, name) values (%s, %s)", (u, f"p3-{u}"))
                for oid, amount in expected_orders(u):
                    conn.execute("insert into orders (id, user_id, amount) values (%s, %s, %s)",
                                 (oid, u, amount))
        for _ in range(3):  # the same statements again, now prepared
            for u in ids:
                rows = conn.execute("select id, amount from orders where user_id = %s order by id",
                                    (u,)).fetchall()
                check(rows == expected_orders(u), f"psycopg3: orders of {u}")
        row = conn.execute("select count(*), sum(amount) from orders where user_id between %s and %s",
                           (1101, 1110)).fetchone()
        check(row == (30, D("67.50")), f"psycopg3: report {row}")
        try:
            with conn.transaction():
                conn.execute("insert into users (id, name) values (%s, %s)", (1199, "x"))
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        check(conn.execute("select count(*) from users where id = %s", (1199,)).fetchone()[0] == 0,
              "psycopg3: rolled back")
    # One INSERT of several rows with their values as parameters, rows for several shards:
    # split per shard, each part with its own parameters (README), prepared or not. The same
    # statement runs twice with other keys: prepared once, its parts are built per Bind.
    for threshold, base in ((0, 1201), (5, 1211)):
        with psycopg.connect(DSN, autocommit=True, prepare_threshold=threshold) as conn:
            for again in (0, 100):
                rows = [(base + again + i, f"multi-{base + i}") for i in range(6)]
                ids = [r[0] for r in rows]
                conn.execute("delete from users where id = any(%s)", (ids,))
                cur = conn.execute("insert into users (id, name) values "
                                   + ", ".join(["(%s, %s)"] * len(rows)) + " returning id",
                                   [v for r in rows for v in r])
                check([r[0] for r in cur.fetchall()] == ids,
                      f"psycopg3: multi-row INSERT RETURNING (prepare_threshold={threshold})")
                n = conn.execute("select count(*) from users where id = any(%s)",
                                 (ids,)).fetchone()[0]
                check(n == len(rows), f"psycopg3: multi-row INSERT kept {n} of {len(rows)} rows")


async def asyncpg_suite():
    import asyncpg

    conn = await asyncpg.connect(host=HOST, port=PORT, user="app", password="secret",
                                 database="app", statement_cache_size=100)
    ids = list(range(1201, 1211))
    await conn.execute("delete from orders where user_id = any($1::bigint[])", ids)
    await conn.execute("delete from users where id = any($1::bigint[])", ids)
    for u in ids:
        async with conn.transaction():
            await conn.execute("insert into users (id, name) values ($1, $2)", u, f"apg-{u}")
            for oid, amount in expected_orders(u):
                await conn.execute("insert into orders (id, user_id, amount) values ($1, $2, $3)",
                                   oid, u, amount)
    for _ in range(3):
        for u in ids:
            rows = await conn.fetch("select id, amount from orders where user_id = $1 order by id", u)
            check([tuple(r) for r in rows] == expected_orders(u), f"asyncpg: orders of {u}")
    row = await conn.fetchrow(
        "select count(*), sum(amount), max(amount) from orders where user_id between $1 and $2",
        1201, 1210)
    check(tuple(row) == (30, D("67.50"), D("3.25")), f"asyncpg: report {tuple(row)}")
    rows = await conn.fetch("select user_id from users u join orders o on o.user_id = u.id "
                            "where u.id = $1 order by o.id", 1205)
    check(len(rows) == 3, "asyncpg: co-located join")
    await conn.close()


async def asyncpg_session_suite():
    """What a pooled asyncpg client relies on, beyond queries: startup settings, cursors
    (portals) inside a transaction, its statement cache after DDL changes a result type,
    a timeout's cancel never reaching the next query."""
    import asyncpg

    conn = await asyncpg.connect(host=HOST, port=PORT, user="app", password="secret",
                                 database="app", statement_cache_size=100,
                                 server_settings={"statement_timeout": "7s",
                                                  "application_name": "apg-session"})
    check(await conn.fetchval("show statement_timeout") == "7s", "asyncpg: startup setting")
    check(await conn.fetchval("show application_name") == "apg-session", "asyncpg: application_name")
    u = 1250
    await conn.execute("delete from orders where user_id = $1", u)
    await conn.execute("delete from users where id = $1", u)
    await conn.execute("insert into users (id, name, email) values ($1, 'cur', 'e')", u)
    for i in range(40):
        await conn.execute("insert into orders (id, user_id, amount) values ($1, $2, 1)", i, u)
    async with conn.transaction():
        seen = [r[0] async for r in conn.cursor(
            "select id from orders where user_id = $1 order by id", u, prefetch=7)]
        cur = await conn.cursor("select id from orders where user_id = $1 order by id", u)
        await cur.fetch(5)
        nxt = [r[0] for r in await cur.fetch(5)]
    check(seen == list(range(40)) and nxt == list(range(5, 10)), f"asyncpg: cursors {nxt}")
    # A cursor as the transaction's first statement: its Bind comes in a batch of its own,
    # which must open the transaction so the portal outlives that batch (before: 'portal
    # "__asyncpg_portal_N__" does not exist'); MOVE on it, as asyncpg's forward() sends.
    try:
        async with conn.transaction():
            cur = await conn.cursor("select id from orders where user_id = $1 order by id", u)
            first = [r[0] for r in await cur.fetch(3)]
            await cur.forward(2)
            row = await cur.fetchrow()
        check(first == [0, 1, 2] and row[0] == 5, f"asyncpg: first-statement cursor {first} {row}")
    except Exception as e:  # noqa: BLE001 (the failure is what is checked)
        check(False, f"asyncpg: first-statement cursor: {type(e).__name__} {e}")
    q = "select email from users where id = $1"
    check(await conn.fetchval(q, u) == "e", "asyncpg: cached statement")
    await conn.execute("alter table users alter column email type varchar(100)")
    try:
        # asyncpg re-prepares after PostgreSQL's 'cached plan must not change result type'.
        check(await conn.fetchval(q, u) == "e", "asyncpg: statement after DDL")
    finally:
        await conn.execute("alter table users alter column email type text")
    for _ in range(5):
        try:
            await conn.fetchval("select pg_sleep(1) from users where id = $1", u, timeout=0.2)
            check(False, "asyncpg: timeout expected")
        except asyncio.TimeoutError:
            pass
        check(await conn.fetchval("select name from users where id = $1", u) == "cur",
              "asyncpg: query after a timeout")
    await conn.close()


async def asyncpg_ddl_suite():
    """Types and functions dropped and made again between connections, as asyncpg's own
    test_codecs does. Each new connection's statements plan against the new catalog (before:
    a statement of the same text another client had prepared on the pooled server failed
    with 'cache lookup failed for type' or 'cached plan must not change result type'), and
    calling a user function in a statement prepared with Flush gets no stray ReadyForQuery
    (before: asyncpg read the type introspection's 14 columns as the call's result)."""
    import asyncpg

    async def connect():
        return await asyncpg.connect(host=HOST, port=PORT, user="app", password="secret",
                                     database="app")

    for i in range(3):
        conn = await connect()
        await conn.execute("CREATE TYPE apg_enum AS ENUM ('abc', 'def', 'ghi');"
                           "CREATE TYPE apg_comp AS (a int, b apg_enum)")
        try:
            r = await conn.fetchval("SELECT ROW(1, 'def'::apg_enum)::apg_comp")
            check(r is not None and tuple(r.items()) == (("a", 1), ("b", "def")),
                  f"asyncpg: composite with enum, round {i}: {r}")
        except Exception as e:  # noqa: BLE001 (the failure is what is checked)
            check(False, f"asyncpg: composite with enum, round {i}: {type(e).__name__} {e}")
        finally:
            await conn.execute("DROP TYPE apg_comp; DROP TYPE apg_enum")
        await conn.close()
        conn = await connect()
        await conn.execute("CREATE TYPE apg_enum AS ENUM ('abc', 'def', 'ghi');"
                           "CREATE FUNCTION apg_return_enum() RETURNS apg_enum LANGUAGE plpgsql "
                           "AS $$ BEGIN RETURN 'abc'::apg_enum; END; $$")
        try:
            r = await conn.fetchval("SELECT apg_return_enum()")
            check(r == "abc", f"asyncpg: function returning an enum, round {i}: {r}")
        except Exception as e:  # noqa: BLE001
            check(False, f"asyncpg: function returning an enum, round {i}: {type(e).__name__} {e}")
        finally:
            await conn.execute("DROP FUNCTION apg_return_enum(); DROP TYPE apg_enum")
        await conn.close()


def notify_pid_suite():
    """A notification the client's own session sent carries the process id the client was
    given (BackendKeyData), as on PostgreSQL: psycopg's and asyncpg's own tests compare them
    (before: the server's pid, which the client never saw)."""
    import psycopg2
    conn = psycopg2.connect(host=HOST, port=PORT, user="app", password="secret", dbname="app")
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("LISTEN pgshard_chan")
    cur.execute("NOTIFY pgshard_chan, 'self'")
    conn.poll()
    check(len(conn.notifies) == 1, f"psycopg2: own notification {conn.notifies}")
    if conn.notifies:
        n = conn.notifies[0]
        check(n.payload == "self" and n.pid == conn.get_backend_pid(),
              f"psycopg2: notification pid {n.pid}, client pid {conn.get_backend_pid()}")
    other = psycopg2.connect(host=HOST, port=PORT, user="app", password="secret", dbname="app")
    other.autocommit = True
    other.cursor().execute("NOTIFY pgshard_chan, 'other'")
    deadline = time.time() + 5
    while len(conn.notifies) < 2 and time.time() < deadline:
        select.select([conn], [], [], 0.2)
        conn.poll()
    check(len(conn.notifies) == 2 and conn.notifies[1].pid != conn.get_backend_pid(),
          f"psycopg2: another session's notification {conn.notifies}")
    other.close()
    conn.close()


def psycopg3_deallocate_suite():
    """psycopg 3 keeps its prepared statements in step with the server's by SQL sent as
    unnamed extended-protocol statements: DEALLOCATE ALL after a DROP or a ROLLBACK, and
    DEALLOCATE _pg3_N when its cache evicts one. Through pgshard those are the client's own
    names (before: 'prepared statement "_pg3_2" does not exist', and after DEALLOCATE ALL
    pgshard's own statements on the server were gone: 'pgshard_..._N does not exist')."""
    import psycopg
    dsn = f"host={HOST} port={PORT} user=app password=secret dbname=app"
    conn = psycopg.connect(dsn, prepare_threshold=0, autocommit=True)
    conn.prepared_max = 2
    try:
        check([conn.execute("select %s::int + 1", (i,)).fetchone()[0] for i in range(2)] == [1, 2],
              "psycopg: prepared")
        conn.execute("drop table if exists pgshard_not_there")  # DEALLOCATE ALL follows
        check([conn.execute("select %s::int + 2", (i,)).fetchone()[0] for i in range(2)] == [2, 3],
              "psycopg: prepared again after DEALLOCATE ALL")
        got = [conn.execute(f"select %s::int + {k}", (k,)).fetchone()[0] for k in range(3, 8)]
        check(got == [6, 8, 10, 12, 14], f"psycopg: evictions (DEALLOCATE _pg3_N) {got}")
        names = [r[0] for r in conn.execute(
            "select name from pg_prepared_statements where name like %s order by 1",
            ("_pg3%",)).fetchall()]
        check("_pg3_6" in names and "_pg3_7" in names and "_pg3_0" not in names
              and "_pg3_5" not in names, f"psycopg: the client's statements {names}")
    except Exception as e:  # noqa: BLE001 (the failure is what is checked)
        check(False, f"psycopg: DEALLOCATE: {type(e).__name__} {e}")
    conn.close()
    conn = psycopg.connect(dsn, prepare_threshold=0)
    try:
        check(conn.execute("select %s::int * 2", (4,)).fetchone()[0] == 8, "psycopg: in a transaction")
        conn.rollback()  # DEALLOCATE ALL follows
        check(conn.execute("select %s::int * 2", (5,)).fetchone()[0] == 10, "psycopg: after ROLLBACK")
        conn.commit()
    except Exception as e:  # noqa: BLE001
        check(False, f"psycopg: after ROLLBACK: {type(e).__name__} {e}")
    conn.close()
    # BEGIN as a prepared statement of its own (autocommit): pgshard holds it until a shard
    # is picked. After ROLLBACK's DEALLOCATE ALL (unnamed), the next BEGIN ran the client's
    # unnamed statement, DEALLOCATE ALL, instead: no transaction, and the SET prepared again
    # failed with 26000 for pgshard's name.
    conn = psycopg.connect(dsn, prepare_threshold=0, autocommit=True)
    try:
        for _ in range(2):
            conn.execute("begin")
            conn.execute("set work_mem = '3MB'")
            conn.execute("select id from orders where user_id = %s", (1003,)).fetchall()
            conn.execute("rollback")  # DEALLOCATE ALL follows
        conn.execute("begin")
        conn.execute("set work_mem = '3MB'")
        check(conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS,
              "psycopg: BEGIN after DEALLOCATE ALL opens a transaction")
        check(conn.execute("show work_mem").fetchone()[0] == "3MB", "psycopg: SET in it")
        conn.execute("commit")
        check(conn.execute("show work_mem").fetchone()[0] == "3MB", "psycopg: SET committed")
    except Exception as e:  # noqa: BLE001
        check(False, f"psycopg: BEGIN after DEALLOCATE ALL: {type(e).__name__} {e}")
    conn.close()


def signal_suite():
    """pg_cancel_backend / pg_terminate_backend of the pid a client was given (BackendKeyData)
    reach that client, as on PostgreSQL (before: the pid went to a server, which had no such
    process, and answered false)."""
    import threading
    import psycopg
    import psycopg2
    dsn = f"host={HOST} port={PORT} user=app password=secret dbname=app"
    victim = psycopg2.connect(dsn)
    victim.autocommit = True
    killer = psycopg2.connect(dsn)
    killer.autocommit = True
    kc = killer.cursor()
    outcome = []

    def sleeper():  # what the victim's pg_sleep(5) ended with: its SQLSTATE, or "finished"
        try:
            victim.cursor().execute("select pg_sleep(5)")
            outcome.append("finished")
        except psycopg2.OperationalError as e:
            outcome.append(getattr(e, "pgcode", None) or "closed")

    t = threading.Thread(target=sleeper)
    started = time.time()
    t.start()
    time.sleep(0.5)
    kc.execute("select pg_cancel_backend(%s)", (victim.get_backend_pid(),))
    check(kc.fetchone()[0] is True, "pg_cancel_backend of a client's pid answers true")
    t.join(10)
    check(outcome == ["57014"] and time.time() - started < 3,
          f"pg_cancel_backend cancels that client's statement {outcome}")
    kc.execute("select pg_terminate_backend(%s)", (victim.get_backend_pid(),))
    check(kc.fetchone()[0] is True, "pg_terminate_backend of a client's pid answers true")
    time.sleep(0.3)
    try:
        victim.cursor().execute("select 1")
        check(False, "the terminated client's connection is closed")
    except psycopg2.OperationalError:
        pass
    # Terminated inside a transaction: the transaction rolls back and the session ends at
    # once (before: the next statements and COMMIT went through); terminated while a
    # statement runs: 57P01, not the cancel's retriable 57014.
    victim = psycopg2.connect(dsn)
    vc = victim.cursor()
    vc.execute("delete from users where id in (913000, 913001)")
    victim.commit()
    vc.execute("insert into users (id, name, email) values (913000, 'term', 'x')")
    kc.execute("select pg_terminate_backend(%s)", (victim.get_backend_pid(),))
    time.sleep(0.3)
    try:
        vc.execute("insert into users (id, name, email) values (913001, 'term', 'x')")
        victim.commit()
        check(False, "a client terminated in a transaction cannot go on")
    except psycopg2.OperationalError:
        pass
    kc.execute("select count(*) from users where id in (913000, 913001)")
    check(kc.fetchone()[0] == 0, "the terminated client's transaction rolled back")
    victim = psycopg2.connect(dsn)
    victim.autocommit = True
    outcome.clear()

    t = threading.Thread(target=sleeper)
    t.start()
    time.sleep(0.5)
    kc.execute("select pg_terminate_backend(%s)", (victim.get_backend_pid(),))
    t.join(10)
    check(outcome in (["57P01"], ["closed"]), f"terminated mid-statement: {outcome}")
    try:  # cancelling itself cancels this very statement
        kc.execute("select pg_cancel_backend(%s)", (killer.get_backend_pid(),))
        check(False, "pg_cancel_backend of itself raises QueryCanceled")
    except psycopg2.errors.QueryCanceled:
        pass
    kc.execute("select pg_terminate_backend(2147483000)")  # no client, no server process
    check(kc.fetchone()[0] is False, "pg_terminate_backend of an unknown pid answers false")
    killer.close()
    # A client terminating itself, the pid bound as a parameter (psycopg's test_broken).
    conn = psycopg.connect(dsn, autocommit=True)
    try:
        conn.execute("select pg_terminate_backend(%s)", [conn.pgconn.backend_pid])
        check(False, "terminating itself raises OperationalError")
    except psycopg.OperationalError:
        pass
    check(conn.closed and conn.broken, "terminated connection is closed and broken")

    async def with_asyncpg():
        # asyncpg binds the pid as a binary parameter and reads the result in binary.
        import asyncpg
        a = await asyncpg.connect(host=HOST, port=PORT, user="app", password="secret",
                                  database="app")
        b = await asyncpg.connect(host=HOST, port=PORT, user="app", password="secret",
                                  database="app")
        check(await a.fetchval("select pg_terminate_backend($1)", b.get_server_pid()) is True,
              "asyncpg: pg_terminate_backend of another client")
        await asyncio.sleep(0.3)
        try:
            await b.fetchval("select 1")
            check(False, "asyncpg: the terminated client's connection is closed")
        except (asyncpg.exceptions.ConnectionDoesNotExistError,
                asyncpg.exceptions.AdminShutdownError, asyncpg.exceptions.InterfaceError):
            pass
        await a.close()

    asyncio.run(with_asyncpg())


def pinned_session_end_suite():
    """A pinned client (LISTEN) whose server session is terminated loses its session, as on
    PostgreSQL: its next statement fails and the connection closes (before: it ran on a
    fresh server, the LISTEN silently gone)."""
    import psycopg2
    dsn = f"host={HOST} port={PORT} user=app password=secret dbname=app"
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("LISTEN pgshard_end")
    cur.execute("select pg_backend_pid()")
    server_pid = cur.fetchone()[0]
    other = psycopg2.connect(dsn)
    other.autocommit = True
    oc = other.cursor()
    oc.execute("select pg_terminate_backend(%s)", (server_pid,))
    check(oc.fetchone()[0] is True, "the pinned client's server is terminated")
    other.close()
    time.sleep(0.3)
    try:
        cur.execute("select 1")
        check(False, "a pinned client whose server was terminated is closed")
    except psycopg2.OperationalError:
        pass
    check(conn.closed != 0, "the pinned client's connection is closed")


def psycopg3_pipeline_suite():
    """An error in the middle of a pipeline: psycopg 3 leaves pipeline mode cleanly and the
    statements of the failed sync are not applied, as directly."""
    import psycopg

    with psycopg.connect(f"host={HOST} port={PORT} user=app password=secret dbname=app",
                         autocommit=True) as conn:
        conn.execute("delete from orders where user_id = 1260")
        conn.execute("delete from users where id between 1260 and 1262")
        for _ in range(3):
            try:
                # One Sync's statements go to one shard: the same user throughout.
                with conn.pipeline() as p:
                    conn.execute("insert into orders (id, user_id, amount) values (1, 1260, 1)")
                    conn.execute("select 1/0 from users where id = 1260")
                    conn.execute("insert into orders (id, user_id, amount) values (2, 1260, 1)")
                    p.sync()
                check(False, "psycopg3: pipeline error expected")
            except psycopg.errors.DivisionByZero:
                pass
            check(conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE,
                  "psycopg3: idle after a failed pipeline")
        n = conn.execute("select count(*) from orders where user_id = 1260").fetchone()[0]
        check(n == 0, f"psycopg3: failed pipeline applied {n} rows")
        with conn.pipeline():
            curs = [conn.execute("select %s::int from users where id = %s", (i, 1262), prepare=True)
                    for i in range(10)]
        check(all(c.fetchone() is None for c in curs), "psycopg3: pipelined prepared reads")


def pipelined_transaction_suite():
    """BEGIN, a keyed statement and ROLLBACK (or COMMIT) in one psycopg 3 pipeline go to the
    key's shard (before: 0A000 unless the key was on the first shard); asyncpg's fetchval of
    SHOW pgshard.* (a prepared statement) is answered as the simple query is (before: 42704)."""
    import psycopg
    import asyncpg

    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute("delete from users where id between 1270 and 1281")
        for k in range(1270, 1282):
            conn.execute("insert into users (id, name) values (%s, 'before')", (k,))
        for end, name in (("ROLLBACK", "rolled back"), ("COMMIT", "committed")):
            for k in range(1270, 1282):
                try:
                    with conn.pipeline():
                        conn.execute("BEGIN")
                        cur = conn.execute("update users set name = %s where id = %s returning id",
                                           (name, k))
                        conn.execute(end)
                    check(cur.fetchone() == (k,), f"psycopg3: pipelined BEGIN..{end} of user {k}")
                except psycopg.Error as e:
                    check(False, f"psycopg3: pipelined BEGIN..{end} of user {k}: {e}")
        names = conn.execute("select distinct name from users where id between 1270 and 1281"
                             ).fetchall()
        check(names == [("committed",)], f"psycopg3: pipelined transactions left {names}")
        conn.execute("delete from users where id between 1270 and 1281")

    async def show_prepared():
        c = await asyncpg.connect(host=HOST, port=PORT, user="app", password="secret",
                                  database="app")
        try:
            await c.execute("SET pgshard.sharding_key = '1270'")
            got = await c.fetchval("SHOW pgshard.sharding_key")
            check(got == "1270", f"asyncpg: fetchval of SHOW pgshard.sharding_key gave {got!r}")
        except asyncpg.PostgresError as e:
            check(False, f"asyncpg: fetchval of SHOW pgshard.sharding_key: {e}")
        finally:
            await c.close()

    asyncio.run(show_prepared())


def generated_keys_suite():
    """Inserts that leave the serial key to the database through named prepared statements:
    psycopg 3 prepares from the first run here, asyncpg always does. Each row reads back by
    its key (a keyed read goes to the shard the key hashes to: a misplaced row is missed)."""
    import psycopg

    with psycopg.connect(DSN, autocommit=True, prepare_threshold=0) as conn:
        conn.execute("delete from accounts where name like 'gen-%'")
        ids = [conn.execute("insert into accounts (name) values (%s) returning id",
                            (f"gen-p3-{i}",)).fetchone()[0] for i in range(12)]
        check(len(set(ids)) == 12, f"psycopg3: generated ids not unique {ids}")
        for i, k in enumerate(ids):
            row = conn.execute("select name from accounts where id = %s", (k,)).fetchone()
            check(row == (f"gen-p3-{i}",), f"psycopg3: generated id {k} reads back {row}")

    async def with_asyncpg():
        import asyncpg

        conn = await asyncpg.connect(host=HOST, port=PORT, user="app", password="secret",
                                     database="app", statement_cache_size=100)
        got = [await conn.fetchval("insert into accounts (name) values ($1) returning id",
                                   f"gen-apg-{i}") for i in range(12)]
        async with conn.transaction():
            got.append(await conn.fetchval(
                "insert into accounts (name) values ($1) returning id", "gen-apg-txn"))
        check(len(set(got)) == 13, f"asyncpg: generated ids not unique {got}")
        for k in got:
            name = await conn.fetchval("select name from accounts where id = $1", k)
            check(name is not None and name.startswith("gen-apg"), f"asyncpg: id {k} reads {name}")
        await conn.close()

    asyncio.run(with_asyncpg())


def pipeline_suite():
    """psycopg 3's executemany pipelines one statement per row up to one Sync: rows bound for
    several shards, in one transaction as on PostgreSQL (an error keeps none of them)."""
    import psycopg

    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute("delete from users where id between 800000 and 800100")
        cur = conn.cursor()
        cur.executemany("insert into users (id, name) values (%s, %s)",
                        [(800000 + i, f"em-{i}") for i in range(30)])
        n = conn.execute("select count(*) from users where id between 800000 and 800100").fetchone()[0]
        check(n == 30, f"psycopg3: executemany over shards kept {n} of 30 rows")
        rows = [(800050 + i, "dup") for i in range(10)]
        rows[5] = (800003, "dup")  # already there
        try:
            cur.executemany("insert into users (id, name) values (%s, %s)", rows)
            check(False, "psycopg3: executemany with a duplicate key should fail")
        except psycopg.errors.UniqueViolation:
            pass
        n = conn.execute("select count(*) from users where name = 'dup'").fetchone()[0]
        check(n == 0, f"psycopg3: a failed executemany kept {n} rows")
        # Generated keys, RETURNING each row's.
        conn.execute("delete from accounts where name like 'em-%'")
        cur.executemany("insert into accounts (name) values (%s) returning id",
                        [(f"em-{i}",) for i in range(8)], returning=True)
        ids = []
        while True:
            ids.extend(r[0] for r in cur.fetchall())
            if not cur.nextset():
                break
        check(len(set(ids)) == 8, f"psycopg3: executemany generated ids {ids}")
        for k in ids:
            got = conn.execute("select name from accounts where id = %s", (k,)).fetchone()
            check(got is not None, f"psycopg3: generated id {k} reads back")
        conn.execute("delete from users where id between 800000 and 800100")


def pipeline_lost_server_suite():
    """A psycopg 3 pipeline over several shards whose earlier statements' servers are
    terminated while a later statement runs on another shard: the client gets an error (before:
    none, and it waited forever: "waiting on client, in flight 0"), no row of the pipeline
    stays, and the connection goes on."""
    import threading
    import psycopg

    shards = [int(p) for p in os.environ["PGSHARD_SHARDS"].split(",")]

    def direct(port):
        return psycopg.connect(f"host={HOST} port={port} user=app password=secret dbname=app",
                               autocommit=True)

    def terminate_others():
        # Once the slow statement runs on one shard: every server of the others that holds
        # part of the pipeline's transaction.
        for _ in range(200):
            for port in shards:
                with direct(port) as d:
                    slow = d.execute("select 1 from pg_stat_activity where usename = 'app' and "
                                     "query like '%pg_sleep%' and state = 'active' and "
                                     "pid <> pg_backend_pid()").fetchall()
                if not slow:
                    continue
                for other in shards:
                    if other == port:
                        continue
                    with direct(other) as d:
                        d.execute("select pg_terminate_backend(pid) from pg_stat_activity "
                                  "where usename = 'app' and state like 'idle in transaction%'")
                return
            time.sleep(0.02)

    for autocommit in (True, False):
        ids = [801000 + i for i in range(10)] if autocommit else [801100 + i for i in range(10)]
        conn = psycopg.connect(DSN, autocommit=autocommit)
        outcome = []

        def run():
            try:
                with conn.pipeline():
                    cur = conn.cursor()
                    for i, k in enumerate(ids):
                        value = "(select pg_sleep(1))::text" if i == 8 else "'pl'"
                        cur.execute(f"insert into users (id, name) values (%s, {value})", (k,))
                    # A statement for every shard after the slow one: the loss is its error.
                    # (Noticed only at the Sync, the loss is the Sync's error, as a failed
                    # implicit COMMIT is on PostgreSQL, which psycopg 3.1 reads as "cannot exit
                    # pipeline mode while busy", its connection then stuck in pipeline mode.)
                    cur.execute("select count(*) from users where name = 'pl'")
                if not autocommit:
                    conn.commit()
                outcome.append("committed")
            except psycopg.OperationalError as e:
                outcome.append(e.sqlstate or "closed")

        killer = threading.Thread(target=terminate_others)
        killer.start()
        t = threading.Thread(target=run, daemon=True)
        t.start()
        t.join(20)
        killer.join(20)
        what = f"psycopg3 pipeline, servers lost mid-batch (autocommit={autocommit})"
        if t.is_alive():
            check(False, f"{what}: no answer in 20 s")
            return
        check(len(outcome) == 1 and outcome[0][:2] in ("08", "57"), f"{what}: {outcome}")
        if not autocommit:
            conn.rollback()
        check(conn.execute("select 1").fetchone() == (1,), f"{what}: the connection goes on")
        n = conn.execute("select count(*) from users where id = any(%s)", (ids,)).fetchone()[0]
        check(n == 0, f"{what}: {n} rows of the failed pipeline stayed")
        conn.close()


def insert_select_suite():
    """INSERT ... SELECT: psycopg 3 with server-side parameters in the SELECT, and SQLAlchemy
    Core's insert().from_select(). Rows copied across shards read back by their new keys."""
    import psycopg
    from sqlalchemy import BigInteger, Column, MetaData, String, Table, create_engine, insert, select

    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute("delete from users where id between 500000 and 700000")
        got = conn.execute("insert into users (id, name) select id + 500000, name || %s from users "
                           "where id between %s and %s returning id", ("-copy", 1101, 1110)).fetchall()
        check(sorted(r[0] for r in got) == list(range(501101, 501111)), f"psycopg3: copied {got}")
        for k in range(501101, 501111):
            row = conn.execute("select name from users where id = %s", (k,)).fetchone()
            check(row == (f"p3-{k - 500000}-copy",), f"psycopg3: copy {k} reads back {row}")
    meta = MetaData()
    users = Table("users", meta, Column("id", BigInteger, primary_key=True), Column("name", String))
    engine = create_engine(f"postgresql+psycopg2://app:secret@{HOST}:{PORT}/app", future=True)
    with engine.begin() as c:
        result = c.execute(insert(users).from_select(
            ["id", "name"], select(users.c.id + 600000, users.c.name).where(users.c.id.between(1301, 1305))))
        check(result.rowcount == 5, f"sqlalchemy: from_select inserted {result.rowcount}")
    with engine.connect() as c:
        names = [c.execute(select(users.c.name).where(users.c.id == k)).scalar()
                 for k in range(601301, 601306)]
        check(names == [f"orm-{k}" for k in range(1301, 1306)], f"sqlalchemy: copies {names}")
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute("delete from users where id between 500000 and 700000")


def sqlalchemy_suite():
    from sqlalchemy import BigInteger, Column, ForeignKey, Numeric, String, create_engine, func, select
    from sqlalchemy.orm import Session, declarative_base, relationship

    Base = declarative_base()

    class User(Base):
        __tablename__ = "users"
        id = Column(BigInteger, primary_key=True)
        name = Column(String, nullable=False)
        email = Column(String)
        orders = relationship("Order", back_populates="user")

    class Order(Base):
        __tablename__ = "orders"
        id = Column(BigInteger, primary_key=True)
        user_id = Column(BigInteger, ForeignKey("users.id"), primary_key=True)
        amount = Column(Numeric(12, 2), nullable=False)
        status = Column(String, nullable=False, default="new")
        user = relationship("User", back_populates="orders")

    engine = create_engine(f"postgresql+psycopg2://app:secret@{HOST}:{PORT}/app", future=True)
    ids = list(range(1301, 1306))
    with engine.connect() as c:
        c = c.execution_options(isolation_level="AUTOCOMMIT")
        c.exec_driver_sql("delete from orders where user_id between 1301 and 1305")
        c.exec_driver_sql("delete from users where id between 1301 and 1305")
    for u in ids:
        with Session(engine) as s:
            user = User(id=u, name=f"orm-{u}")
            user.orders = [Order(id=oid, amount=amount) for oid, amount in expected_orders(u)]
            s.add(user)
            s.commit()
    with Session(engine) as s:
        user = s.get(User, 1303)
        check(user is not None and user.name == "orm-1303", "sqlalchemy: get by key")
        got = sorted((o.id, o.amount) for o in user.orders)
        check(got == expected_orders(1303), f"sqlalchemy: relationship {got}")
        # A cross-shard read in the same transaction, which already used one shard.
        total = s.execute(select(func.sum(Order.amount)).where(Order.user_id.between(1301, 1305))).scalar()
        check(total == D("33.75"), f"sqlalchemy: report {total}")


def orm_serial_suite():
    """Issue 30: the schema every ORM generates, `customer_orders(id serial primary key,
    customer_id ...)` sharded by customer_id (customers by their bigserial id). Before, each
    shard's own sequence filled `id`, so ids repeated across shards: get() returned another
    customer's order, an UPDATE by id matched several rows, a cascade DELETE removed other
    customers' orders."""
    from sqlalchemy import BigInteger, Column, ForeignKey, Integer, String, create_engine, func, select, update
    from sqlalchemy.orm import Session, declarative_base, relationship

    Base = declarative_base()

    class Customer(Base):
        __tablename__ = "customers"
        id = Column(BigInteger, primary_key=True)
        name = Column(String, nullable=False)
        orders = relationship("Order", back_populates="customer", cascade="all, delete-orphan")

    class Order(Base):
        __tablename__ = "customer_orders"
        id = Column(Integer, primary_key=True)
        customer_id = Column(BigInteger, ForeignKey("customers.id"), nullable=False)
        item = Column(String, nullable=False)
        qty = Column(Integer, nullable=False, default=1)
        customer = relationship("Customer", back_populates="orders")

    engine = create_engine(f"postgresql+psycopg2://app:secret@{HOST}:{PORT}/app", future=True)
    with Session(engine) as s:
        customers = [Customer(name=f"cust-{i}", orders=[Order(item=f"cust-{i}-{k}") for k in range(3)])
                     for i in range(8)]
        s.add_all(customers)
        s.commit()
        expected = {o.id: (c.id, o.item) for c in customers for o in c.orders}
        customer_ids = [c.id for c in customers]
    check(len(expected) == 24, f"orm serial: order ids repeat across shards: {sorted(expected)}")
    with Session(engine) as s:
        for oid, (cid, item) in expected.items():
            o = s.get(Order, oid)
            check(o is not None and (o.customer_id, o.item) == (cid, item),
                  f"orm serial: get(Order, {oid}) gave {o and (o.customer_id, o.item)}, not {(cid, item)}")
    target = sorted(expected)[4]
    with engine.begin() as c:
        n = c.execute(update(Order.__table__).where(Order.__table__.c.id == target).values(qty=5)).rowcount
        check(n == 1, f"orm serial: UPDATE by id {target} touched {n} rows")
    from sqlalchemy.orm.exc import StaleDataError
    with Session(engine) as s:
        o = s.get(Order, target)
        o.qty = 7  # the ORM checks that its UPDATE matched exactly one row
        try:
            s.commit()
        except StaleDataError as e:
            check(False, f"orm serial: ORM update by id: {e}")
            return
        check(s.execute(select(func.count()).select_from(Order).where(Order.qty == 7)).scalar() == 1,
              "orm serial: ORM update by id")
    victim = customer_ids[0]
    with Session(engine) as s:
        s.delete(s.get(Customer, victim))
        s.commit()
    with Session(engine) as s:
        left = {o.id: (o.customer_id, o.item) for o in s.execute(
            select(Order).where(Order.customer_id.in_(customer_ids))).scalars()}
        want = {k: v for k, v in expected.items() if v[0] != victim}
        check(left == want, f"orm serial: cascade delete of customer {victim} left "
                            f"{len(left)} orders, expected {len(want)}")


def named_cursor_suite():
    """psycopg2's named (server-side) cursors: DECLARE "name" CURSOR WITHOUT HOLD FOR ...
    inside the transaction, then FETCH FORWARD n / ALL and CLOSE. A keyed query reads its
    key's shard; a query over every shard is refused (0A000), never one shard's rows."""
    import psycopg2
    import psycopg2.errors

    conn = psycopg2.connect(DSN)
    cur = conn.cursor("by_user")
    cur.execute("select id, amount from orders where user_id = %s order by id", (1005,))
    first = cur.fetchmany(2)
    rest = cur.fetchall()
    check(first + rest == expected_orders(1005), f"psycopg2 named cursor: {first} + {rest}")
    cur.close()
    conn.commit()
    cur = conn.cursor("iterated")
    cur.itersize = 1
    cur.execute("select id from orders where user_id = %s order by id", (1007,))
    got = [r[0] for r in cur]
    check(got == [i for i, _ in expected_orders(1007)], f"psycopg2 named cursor iterated: {got}")
    cur.close()
    conn.commit()
    cur = conn.cursor("everywhere")
    try:
        cur.execute("select count(*) from orders")
        got = cur.fetchall()
        check(False, f"psycopg2 named cursor over every shard answered {got}")
    except psycopg2.errors.FeatureNotSupported:
        pass
    conn.rollback()
    plain = conn.cursor()
    plain.execute("select count(*) from orders where user_id = %s", (1005,))
    check(plain.fetchone()[0] == 3, "psycopg2: usable after a refused cursor and rollback")
    conn.commit()
    conn.close()


def psycopg3_shared_set_suite():
    """SET as a named prepared statement (prepare_threshold=0) that other clients prepared
    too, then SHOW: in transaction pooling the Parse (with its Sync) and the Execute may go
    to different servers. Before the fix the server that only parsed the SET was recorded
    as having it, and the client's later statements there ran without it (1-7 SHOWs in 500
    returned another client's value or the default)."""
    import threading

    import psycopg

    lost = []

    def client(n):
        with psycopg.connect(DSN, autocommit=True, prepare_threshold=0) as conn:
            for i in range(20):
                want = f"{64 + (n + i) % 10}MB"
                conn.execute(f"SET work_mem = '{want}'")
                got = conn.execute("SHOW work_mem").fetchone()[0]
                if got != want:
                    lost.append((n, i, want, got))

    for _ in range(5):
        threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    check(not lost, f"psycopg3: SET as a shared prepared statement kept: {len(lost)} lost, e.g. {lost[:3]}")


def main():
    psycopg2_suite()
    psycopg3_suite()
    asyncio.run(asyncpg_suite())
    asyncio.run(asyncpg_session_suite())
    asyncio.run(asyncpg_ddl_suite())
    notify_pid_suite()
    psycopg3_deallocate_suite()
    psycopg3_shared_set_suite()
    signal_suite()
    pinned_session_end_suite()
    psycopg3_pipeline_suite()
    pipelined_transaction_suite()
    generated_keys_suite()
    sqlalchemy_suite()
    insert_select_suite()
    pipeline_suite()
    pipeline_lost_server_suite()
    orm_serial_suite()
    named_cursor_suite()
    if failures:
        print(f"{len(failures)} failure(s)", file=sys.stderr)
        sys.exit(1)
    print("python drivers: all checks passed")


if __name__ == "__main__":
    main()
