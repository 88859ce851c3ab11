"""PyMySQL (pure Python, client-side parameter interpolation) through chorus's
MySQL listener, as applications use it: parameters of every common type,
autocommit and PyMySQL's default (autocommit off: every statement inside a
transaction until commit()), commit and rollback, executemany (one
multi-row INSERT, or one statement per row), unbuffered cursors, errors
that leave the connection usable, and both password plugins. Run by
integration-tests/tests/mysql_clients.rs with chorus's URL, the leader's
(reads through chorus on another connection may be served by a follower
that has not caught up yet) and the users pinned to each plugin; exits
non-zero on any surprise."""

import datetime
import sys
from decimal import Decimal
from urllib.parse import unquote, urlparse

import pymysql
from pymysql.constants import CLIENT


def params(url, **kw):
    u = urlparse(url)
    return dict(
        host=u.hostname,
        port=u.port,
        user=unquote(u.username),
        password=unquote(u.password or ""),
        database=unquote(u.path.lstrip("/")),
        charset="utf8mb4",
        **kw,
    )


def check(ok, what):
    if not ok:
        raise SystemExit(f"check failed: {what}")


def expect_error(code, f):
    try:
        f()
    except pymysql.MySQLError as e:
        check(e.args[0] == code, f"error {code} expected, got {e.args!r}")
        return e
    raise SystemExit(f"error {code} expected, nothing raised")


url, leader_url = sys.argv[1], sys.argv[2]
sha2_user, native_user = sys.argv[3], sys.argv[4]  # user:password, each


def leader_rows(sql, args=None):
    with pymysql.connect(**params(leader_url)) as leader, leader.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


NASTY = "it's \"quoted\", back\\slashed, 100% _under_; -- not a comment\n\ttab \x00 nul"
UNICODE = "ünïcødé 日本語 🎉 Ω"
BLOB = bytes(range(256)) + b"'\"\\\x00\xff"
AT = datetime.datetime(2026, 1, 2, 3, 4, 5, 123456)
PRICE = Decimal("12345678.1234")

# --- autocommit ---------------------------------------------------------
with pymysql.connect(**params(url, autocommit=True)) as c:
    cur = c.cursor()
    cur.execute(
        "CREATE TABLE pm (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100) NOT NULL UNIQUE, "
        "note MEDIUMTEXT, price DECIMAL(12,4), at DATETIME(6), day DATE, data BLOB, flag BOOL, f DOUBLE, "
        "created TIMESTAMP(6) DEFAULT CURRENT_TIMESTAMP(6), n INT NOT NULL DEFAULT 0) "
        "DEFAULT CHARSET = utf8mb4"
    )
    row = ("nasty", NASTY + UNICODE, PRICE, AT, AT.date(), BLOB, True, 1.5)
    check(cur.execute("INSERT INTO pm (name, note, price, at, day, data, flag, f) "
                      "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", row) == 1, "one row")
    check(cur.lastrowid == 1 and c.insert_id() == 1, f"lastrowid {cur.lastrowid}")
    cur.execute("INSERT INTO pm (name, note, price, at, day, data, flag, f) "
                "VALUES (%(name)s, %(note)s, %(p)s, %(at)s, %(at)s, %(data)s, %(flag)s, %(f)s)",
                dict(name=UNICODE, note=None, p=None, at=None, data=None, flag=None, f=None))
    check(cur.lastrowid == 2, f"lastrowid {cur.lastrowid}")
    # Read back on the same connection (its own writes, wherever it reads).
    cur.execute("SELECT name, note, price, at, day, data, flag, f FROM pm WHERE id = %s", (1,))
    got = cur.fetchone()
    want = ("nasty", NASTY + UNICODE, PRICE, AT, AT.date(), BLOB, 1, 1.5)
    check(got == want, f"row 1 read back: {got!r}")
    cur.execute("SELECT name, note, price, at, data FROM pm WHERE name = %s", (UNICODE,))
    check(cur.fetchall() == ((UNICODE, None, None, None, None),), "row 2 read back")
    check(leader_rows("SELECT note, data FROM pm WHERE id = 1") == ((NASTY + UNICODE, BLOB),), "on the leader")

    # executemany of INSERT ... VALUES: PyMySQL sends one multi-row INSERT.
    n = cur.executemany("INSERT INTO pm (name, price, data) VALUES (%s, %s, %s)",
                        [(f"m{i}", Decimal(i) / 7, bytes([i]) * i) for i in range(50)])
    check(n == 50 and cur.rowcount == 50, f"executemany inserted {n}")
    first = cur.lastrowid
    cur.execute("SELECT MIN(id), MAX(id), COUNT(*) FROM pm WHERE name LIKE 'm%%'")
    check(cur.fetchone() == (first, first + 49, 50), "consecutive ids from the multi-row INSERT")
    # executemany of an UPDATE: one statement per row.
    n = cur.executemany("UPDATE pm SET n = n + %s, at = NOW(6) WHERE name = %s",
                        [(i, f"m{i}") for i in range(0, 50, 5)])
    check(n == 10, f"executemany updated {n}")
    check(cur.execute("UPDATE pm SET n = n WHERE name = 'm1'") == 0, "an UPDATE that changes nothing")
    cur.execute("INSERT INTO pm (name, n) VALUES (%s, 1) ON DUPLICATE KEY UPDATE n = n + 100", ("m1",))
    check(cur.rowcount == 2, f"upsert of an existing row: rowcount {cur.rowcount}")

    # Errors: the right code, and the connection goes on.
    e = expect_error(1062, lambda: cur.execute("INSERT INTO pm (name) VALUES (%s)", ("nasty",)))
    check(isinstance(e, pymysql.err.IntegrityError), f"1062 is an IntegrityError: {type(e)}")
    expect_error(1146, lambda: cur.execute("SELECT * FROM no_such_table"))
    expect_error(1064, lambda: cur.execute("SELECT FROM WHERE"))
    # A typo: chorus does not know it, and the leader's parser says why.
    e = expect_error(1064, lambda: cur.execute("SELEKT 1"))
    check(isinstance(e, pymysql.err.ProgrammingError), f"1064 is a ProgrammingError: {type(e)}")
    # Valid, but chorus does not know whether it writes: refused before it runs.
    expect_error(1235, lambda: cur.execute("BACKUP STAGE START"))
    expect_error(1048, lambda: cur.execute("INSERT INTO pm (name) VALUES (NULL)"))
    c.ping(reconnect=False)
    cur.execute("SELECT COUNT(*) FROM pm")
    check(cur.fetchone() == (52,), "rows after the errors")
    check(cur.execute("INSERT INTO pm (name) VALUES ('after errors')") == 1, "writes after the errors")
    c.select_db(c.db.decode() if isinstance(c.db, bytes) else c.db)  # COM_INIT_DB

    # A large value, escaped in the text: 1 MiB of quotes and backslashes.
    big = "'\\" * (1 << 19)
    cur.execute("INSERT INTO pm (name, note) VALUES (%s, %s)", ("big", big))
    cur.execute("SELECT LENGTH(note), note = %s FROM pm WHERE name = 'big'", (big,))
    check(cur.fetchone() == (len(big), 1), "the large value read back")
    # Three times that: a 6 MiB statement the server would take, whose log
    # entry (escaped again, twice) it would not. Refused, rolled back, and
    # the connection goes on.
    e = expect_error(1105, lambda: cur.execute("INSERT INTO pm (name, note) VALUES (%s, %s)", ("bigger", big * 3)))
    check("max_allowed_packet" in e.args[1], f"the reason: {e.args}")
    check(leader_rows("SELECT COUNT(*) FROM pm WHERE name = 'bigger'") == ((0,),), "the refused write is not there")
    check(cur.execute("UPDATE pm SET n = n + 1 WHERE name = 'big'") == 1, "writes after the refused one")

    # Unbuffered and dict cursors.
    with c.cursor(pymysql.cursors.SSCursor) as ss:
        ss.execute("SELECT id, name FROM pm ORDER BY id")
        rows = list(ss.fetchall_unbuffered())
        check(len(rows) == 54 and rows[0] == (1, "nasty"), f"unbuffered rows: {len(rows)}")
    with c.cursor(pymysql.cursors.DictCursor) as dc:
        dc.execute("SELECT id, name FROM pm WHERE id = %s", (2,))
        check(dc.fetchone() == {"id": 2, "name": UNICODE}, "dict cursor")

# --- PyMySQL's default: autocommit off ----------------------------------
with pymysql.connect(**params(url)) as t:
    cur = t.cursor()
    check(t.get_autocommit() is False, "autocommit is off by default")
    cur.executemany("INSERT INTO pm (name, at) VALUES (%s, %s)", [(f"t{i}", AT) for i in range(3)])
    cur.execute("UPDATE pm SET n = 7 WHERE name LIKE 't%%'")
    check(leader_rows("SELECT COUNT(*) FROM pm WHERE name LIKE 't%%'") == ((0,),), "not committed yet")
    t.commit()
    check(leader_rows("SELECT COUNT(*), SUM(n) FROM pm WHERE name LIKE 't%%'") == ((3, Decimal(21)),), "committed")

    cur.execute("INSERT INTO pm (name) VALUES ('rolled back 1'), ('rolled back 2')")
    cur.execute("DELETE FROM pm WHERE name = 't0'")
    t.rollback()
    check(leader_rows("SELECT COUNT(*) FROM pm WHERE name LIKE 'rolled back%%' OR name = 't0'") == ((1,),),
          "rolled back")

    # A failing statement inside a transaction undoes itself only.
    cur.execute("INSERT INTO pm (name) VALUES ('kept 1')")
    expect_error(1062, lambda: cur.execute("INSERT INTO pm (name) VALUES ('t1')"))
    cur.execute("INSERT INTO pm (name) VALUES ('kept 2')")
    t.commit()
    check(leader_rows("SELECT COUNT(*) FROM pm WHERE name LIKE 'kept%%'") == ((2,),), "the rest committed")

    # Explicit begin(), then autocommit switched on (which commits).
    t.begin()
    cur.execute("UPDATE pm SET n = n + 1 WHERE name LIKE 'kept%%'")
    t.autocommit(True)
    check(leader_rows("SELECT SUM(n) FROM pm WHERE name LIKE 'kept%%'") == ((Decimal(2),),),
          "SET autocommit = 1 committed the open transaction")
    cur.execute("UPDATE pm SET n = n + 1 WHERE name = 'kept 1'")
    check(leader_rows("SELECT n FROM pm WHERE name = 'kept 1'") == ((2,),), "autocommit on again")

# --- several statements in one query ------------------------------------
with pymysql.connect(**params(url, autocommit=True, client_flag=CLIENT.MULTI_STATEMENTS)) as m:
    cur = m.cursor()
    cur.execute("SELECT 1; SELECT name FROM pm WHERE id = 1")
    check(cur.fetchall() == ((1,),), "first result")
    check(cur.nextset() and cur.fetchall() == (("nasty",),), "second result")
    # Plain writes sent several at a time are logged one by one.
    cur.execute("INSERT INTO pm (name) VALUES ('multi 1'); INSERT INTO pm (name) VALUES ('multi 2')")
    while cur.nextset():
        pass
    cur.execute("SELECT COUNT(*) FROM pm WHERE name LIKE 'multi%%'")
    check(cur.fetchone() == (2,), "both statements of the query ran")
    # Writes mixed with reads are refused, before any of them runs.
    expect_error(1235, lambda: cur.execute("INSERT INTO pm (name) VALUES ('multi 3'); SELECT 1"))
    cur.execute("SELECT COUNT(*) FROM pm WHERE name = 'multi 3'")
    check(cur.fetchone() == (0,), "no statement of the refused query ran")

# --- both password plugins ----------------------------------------------
base = urlparse(url)
for who in (sha2_user, native_user):
    name, password = who.split(":", 1)
    for attempt in range(2):  # caching_sha2: a full authentication, then the fast path
        kw = params(url)
        kw.update(user=name, password=password)
        with pymysql.connect(**kw) as a, a.cursor() as cur:
            cur.execute("SELECT 1")
            check(cur.fetchone() == (1,), f"{name} logged in")
    kw = params(url)
    kw.update(user=name, password=password + "x")
    expect_error(1045, lambda: pymysql.connect(**kw))

print("pymysql client: ok")
