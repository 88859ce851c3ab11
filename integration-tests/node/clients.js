// Node.js drivers through chorus, as applications use them: mysql2 (text
// queries with client-side escaping, execute() with server-side prepared
// statements, bulk VALUES ?, transactions, a pool, changeUser, errors that
// leave the connection usable) and pg (parameters, named prepared
// statements, transactions, a pool). Usage: node clients.js mysql|postgresql
// CHORUS_URL. Run by integration-tests/tests/node_clients.rs, which then
// compares every node. Exits non-zero on any surprise.
"use strict";

const [dialect, url] = process.argv.slice(2);

function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
}

async function expectError(code, f) {
  try {
    await f();
  } catch (e) {
    check(e.code === code, `expected ${code}, got ${e.code}: ${e.message}`);
    return;
  }
  throw new Error(`check failed: ${code} expected, nothing raised`);
}

const nasty = "it's \"quoted\", back\\slashed; -- not a comment\n\t ünïcødé 日本語 🎉";

async function mysql() {
  const mysql2 = require("mysql2/promise");
  const c = await mysql2.createConnection({ uri: url, dateStrings: true, supportBigNumbers: true });
  await c.query(
    "CREATE TABLE nd (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100) UNIQUE, n INT DEFAULT 0, " +
      "price DECIMAL(12,4), at DATETIME(6), data JSON, blob_ LONGBLOB, created TIMESTAMP(6) DEFAULT CURRENT_TIMESTAMP(6))"
  );
  // Client-side escaping (text protocol).
  const [r1] = await c.query("INSERT INTO nd (name, price, at, data) VALUES (?, ?, ?, ?)", [
    nasty,
    "12345678.1234",
    "2026-01-02 03:04:05.123456",
    JSON.stringify({ a: [1, 2], s: nasty }),
  ]);
  check(r1.insertId > 0 && r1.affectedRows === 1, "insert id");
  // Server-side prepared statements (binary protocol), typed parameters.
  for (let i = 0; i < 20; i++) {
    const [r] = await c.execute("INSERT INTO nd (name, n, price, at, blob_) VALUES (?, ?, ?, ?, ?)", [
      `p${i}`,
      i,
      i / 3,
      new Date(Date.UTC(2026, 1, 3, 4, 5, 6, i)),
      Buffer.from([0, 1, 2, 255, i]),
    ]);
    check(r.insertId === r1.insertId + i + 1, `consecutive ids: ${r.insertId}`);
  }
  const [u] = await c.execute("UPDATE nd SET n = n + ?, at = NOW(6) WHERE name LIKE ?", [100, "p1%"]);
  check(u.affectedRows === 11, `updated ${u.affectedRows}`);
  // Bulk insert: one multi-row INSERT.
  const rows = [];
  for (let i = 0; i < 50; i++) rows.push([`bulk ${i}`, i, null]);
  const [b] = await c.query("INSERT INTO nd (name, n, data) VALUES ?", [rows]);
  check(b.affectedRows === 50, "bulk");
  // Transactions.
  await c.beginTransaction();
  await c.execute("INSERT INTO nd (name) VALUES (?)", ["rolled back"]);
  await c.rollback();
  await c.beginTransaction();
  await c.execute("INSERT INTO nd (name) VALUES (?)", ["committed"]);
  await c.query("UPDATE nd SET n = -1 WHERE name = 'committed'");
  await c.commit();
  const [seen] = await c.query("SELECT name FROM nd WHERE name IN ('rolled back', 'committed')");
  check(seen.length === 1 && seen[0].name === "committed", "reads see the session's writes");
  // Errors leave the connection usable.
  await expectError("ER_DUP_ENTRY", () => c.execute("INSERT INTO nd (name) VALUES (?)", ["p1"]));
  await expectError("ER_NO_SUCH_TABLE", () => c.query("SELECT * FROM no_such_table"));
  // A typo gets the server's parse error (chorus asks the leader to parse
  // what it does not know, without running it).
  await expectError("ER_PARSE_ERROR", () => c.query("SELEC 1"));
  await c.ping();
  const [[one]] = await c.query({ sql: "SELECT 1 + 1", rowsAsArray: true });
  check(one[0] === 2, "rowsAsArray");
  // COM_CHANGE_USER to the same user: a fresh server session.
  await c.changeUser({ user: decodeURIComponent(new URL(url).username) });
  await c.query("DELETE FROM nd WHERE name = 'bulk 0'");
  await c.end();
  // A pool: concurrent connections, prepared statements on each.
  const pool = mysql2.createPool({ uri: url, connectionLimit: 4 });
  await Promise.all(
    Array.from({ length: 40 }, (_, i) =>
      pool.execute("UPDATE nd SET n = n + 1, at = NOW(6) WHERE name = ?", [`bulk ${1 + (i % 10)}`])
    )
  );
  const [[sum]] = await pool.query("SELECT SUM(n) AS s FROM nd WHERE name LIKE 'bulk %'");
  check(Number(sum.s) > 0, "pool updates");
  await pool.end();
}

async function postgresql() {
  const { Client, Pool } = require("pg");
  const c = new Client({ connectionString: url });
  await c.connect();
  await c.query(
    "CREATE TABLE nd (id serial PRIMARY KEY, name text UNIQUE, n int DEFAULT 0, price numeric(12,4), " +
      "at timestamptz, data jsonb, blob bytea, created timestamptz DEFAULT now())"
  );
  const r1 = await c.query("INSERT INTO nd (name, price, at, data) VALUES ($1, $2, $3, $4) RETURNING id", [
    nasty,
    "12345678.1234",
    new Date(Date.UTC(2026, 0, 2, 3, 4, 5)),
    { a: [1, 2], s: nasty },
  ]);
  const first = r1.rows[0].id;
  for (let i = 0; i < 20; i++) {
    const r = await c.query({
      name: "ins",
      text: "INSERT INTO nd (name, n, price, blob) VALUES ($1, $2, $3, $4) RETURNING id",
      values: [`p${i}`, i, i / 3, Buffer.from([0, 1, 2, 255, i])],
    });
    check(r.rows[0].id === first + i + 1, `consecutive ids: ${r.rows[0].id}`);
  }
  const u = await c.query("UPDATE nd SET n = n + $1, at = now() WHERE name LIKE $2", [100, "p1%"]);
  check(u.rowCount === 11, `updated ${u.rowCount}`);
  await c.query("BEGIN");
  await c.query("INSERT INTO nd (name) VALUES ($1)", ["rolled back"]);
  await c.query("ROLLBACK");
  await c.query("BEGIN");
  await c.query("INSERT INTO nd (name) VALUES ($1)", ["committed"]);
  await c.query("COMMIT");
  const seen = await c.query("SELECT name FROM nd WHERE name IN ('rolled back', 'committed')");
  check(seen.rows.length === 1, "reads see the session's writes");
  await expectError("23505", () => c.query("INSERT INTO nd (name) VALUES ($1)", ["p1"]));
  await expectError("42P01", () => c.query("SELECT * FROM no_such_table"));
  await c.end();
  const pool = new Pool({ connectionString: url, max: 4 });
  await Promise.all(
    Array.from({ length: 40 }, (_, i) => pool.query("UPDATE nd SET n = n + 1 WHERE name = $1", [`p${i % 10}`]))
  );
  await pool.end();
}

(dialect === "mysql" ? mysql() : postgresql()).then(
  () => console.log(`node ${dialect}: ok`),
  (e) => {
    console.error(e);
    process.exit(1);
  }
);
