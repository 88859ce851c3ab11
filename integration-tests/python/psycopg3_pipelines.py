"""psycopg 3 through chorus: executemany and pipeline mode send Flush between
statements, temporary staging tables and CREATE INDEX CONCURRENTLY go
through the extended protocol. Run by integration-tests/tests/python_clients.rs
with chorus's URL and the leader's (reads through chorus may be served by a
follower that has not caught up yet) as arguments; exits non-zero on any
surprise."""

import sys

import psycopg
from psycopg import errors

url, leader_url = sys.argv[1], sys.argv[2]

with psycopg.connect(url, autocommit=True) as c:
    c.execute(
        "CREATE TABLE pu (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), name text UNIQUE, "
        "at timestamptz DEFAULT now(), n serial)"
    )

# Autocommit: executemany runs in a pipeline; every row's uuid is captured.
with psycopg.connect(url, autocommit=True) as c:
    cur = c.cursor()
    cur.executemany("INSERT INTO pu (name) VALUES (%s)", [(f"a{i}",) for i in range(40)])
    cur.executemany("INSERT INTO pu (name) VALUES (%s) RETURNING id", [(f"r{i}",) for i in range(5)], returning=True)
    ids = []
    while True:
        ids.append(cur.fetchone()[0])
        if not cur.nextset():
            break
    assert len(set(ids)) == 5, ids
    # A failing row: the whole batch is undone, the connection goes on.
    try:
        cur.executemany("INSERT INTO pu (name) VALUES (%s)", [("b1",), ("a3",), ("b2",)])
        raise SystemExit("a duplicate name was accepted")
    except errors.UniqueViolation:
        pass
    with psycopg.connect(leader_url) as leader:
        assert leader.execute("SELECT count(*) FROM pu WHERE name LIKE 'b%%'").fetchone()[0] == 0
    c.execute("CREATE INDEX CONCURRENTLY IF NOT EXISTS pu_at ON pu (at)")

# In a transaction (psycopg's BEGIN goes into the pipeline).
with psycopg.connect(url) as c:
    with c.pipeline():
        for i in range(10):
            c.execute("INSERT INTO pu (name) VALUES (%s)", (f"p{i}",))
        c.execute("UPDATE pu SET name = name || '!' WHERE name LIKE 'p%%'")
    c.commit()
    cur = c.cursor()
    cur.executemany("INSERT INTO pu (name) VALUES (%s)", [(f"t{i}",) for i in range(5)])
    c.rollback()
    try:
        with c.pipeline():
            c.execute("INSERT INTO pu (name) VALUES (%s)", ("q1",))
            c.execute("INSERT INTO pu (name) VALUES (%s)", ("a1",))
            c.execute("INSERT INTO pu (name) VALUES (%s)", ("q2",))
        raise SystemExit("a duplicate name was accepted in a pipeline")
    except errors.UniqueViolation:
        c.rollback()
    # A transaction block inside a pipeline: BEGIN and COMMIT go with it.
    with c.pipeline():
        with c.transaction():
            for i in range(3):
                c.execute("INSERT INTO pu (name) VALUES (%s)", (f"x{i}",))
    # Rows staged in a temporary table, then moved into a regular one.
    cur.execute("CREATE TEMP TABLE stage (name text)")
    cur.executemany("INSERT INTO stage VALUES (%s)", [(f"s{i}",) for i in range(5)])
    cur.execute("INSERT INTO pu (name) SELECT name FROM stage")
    c.commit()

# Read-your-writes through chorus: the writing connection sees its rows at
# once, and so does another connection that carries its position.
with psycopg.connect(url, autocommit=True) as c:
    with c.pipeline():
        for i in range(3):
            c.execute("INSERT INTO pu (name) VALUES (%s)", (f"w{i}",))
    assert c.execute("SELECT count(*) FROM pu WHERE name LIKE 'w%%'").fetchone()[0] == 3
    pos = int(c.execute("SHOW chorus.position").fetchone()[0])
    assert pos > 0, pos
    with psycopg.connect(url, autocommit=True) as d:
        d.execute(f"SET chorus.position = '{pos}'")
        assert d.execute("SELECT count(*) FROM pu WHERE name LIKE %s", ("w%",)).fetchone()[0] == 3
        assert int(d.execute("SHOW chorus.position").fetchone()[0]) >= pos

with psycopg.connect(leader_url, autocommit=True) as c:
    names = {r[0] for r in c.execute("SELECT name FROM pu")}
    want = {f"a{i}" for i in range(40)} | {f"r{i}" for i in range(5)} | {f"p{i}!" for i in range(10)}
    want |= {f"s{i}" for i in range(5)} | {f"x{i}" for i in range(3)} | {f"w{i}" for i in range(3)}
    assert names == want, sorted(names ^ want)
print("ok")
