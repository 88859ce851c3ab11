// MariaDB Connector/J through chorus's MySQL listener, as Java applications
// use it: prepared statements of every common parameter type, batches,
// generated AUTO_INCREMENT keys, transactions with commit, rollback and a
// savepoint, DatabaseMetaData, and an error that leaves the connection
// usable. Run by integration-tests/tests/mysql_clients.rs, once per way of
// preparing (the driver's options in the URLs), with chorus's JDBC URL, a
// direct JDBC URL of the leader (reads through chorus on another connection
// may be served by a follower that has not caught up yet) and the name of
// the table to use.
import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.sql.*;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

public class MariadbJdbcClient {
    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    static long leaderLong(String leaderUrl, String sql) throws SQLException {
        try (Connection l = DriverManager.getConnection(leaderUrl);
                Statement s = l.createStatement();
                ResultSet r = s.executeQuery(sql)) {
            check(r.next(), "a row from the leader: " + sql);
            return r.getLong(1);
        }
    }

    public static void main(String[] args) throws Exception {
        String url = args[0], leaderUrl = args[1], t = args[2];
        String nasty = "it's \"quoted\", back\\slashed, 100% _under_; -- not a comment\n\t\u0000 nul, "
                + "ünïcødé 日本語 \uD83C\uDF89";
        byte[] blob = new byte[300];
        for (int i = 0; i < blob.length; i++) blob[i] = (byte) i;
        Timestamp at = Timestamp.valueOf("2026-01-02 03:04:05.123456");
        BigDecimal price = new BigDecimal("12345678.1234");
        try (Connection c = DriverManager.getConnection(url)) {
            try (Statement s = c.createStatement()) {
                s.execute("CREATE TABLE " + t + " (id BIGINT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100) NOT NULL UNIQUE, "
                        + "note TEXT, price DECIMAL(12,4), at DATETIME(6), day DATE, data BLOB, flag BOOL, f DOUBLE, "
                        + "created TIMESTAMP(6) DEFAULT CURRENT_TIMESTAMP(6), n INT NOT NULL DEFAULT 0) "
                        + "DEFAULT CHARSET = utf8mb4");
            }
            String insert = "INSERT INTO " + t + " (name, note, price, at, day, data, flag, f) VALUES (?, ?, ?, ?, ?, ?, ?, ?)";
            long firstId;
            try (PreparedStatement p = c.prepareStatement(insert, Statement.RETURN_GENERATED_KEYS)) {
                p.setString(1, "nasty");
                p.setString(2, nasty);
                p.setBigDecimal(3, price);
                p.setTimestamp(4, at);
                p.setDate(5, Date.valueOf("2026-01-02"));
                p.setBytes(6, blob);
                p.setBoolean(7, true);
                p.setDouble(8, 1.5);
                check(p.executeUpdate() == 1, "one row inserted");
                try (ResultSet k = p.getGeneratedKeys()) {
                    check(k.next(), "a generated key");
                    firstId = k.getLong(1);
                    check(firstId == 1, "the first id: " + firstId);
                }
                p.setString(1, "nulls");
                for (int i = 2; i <= 8; i++) p.setNull(i, Types.NULL);
                check(p.executeUpdate() == 1, "a row of NULLs");
                try (ResultSet k = p.getGeneratedKeys()) {
                    check(k.next() && k.getLong(1) == 2, "the second id");
                }
            }
            // Read back on the same connection (its own writes, wherever it reads).
            try (PreparedStatement p = c.prepareStatement(
                    "SELECT name, note, price, at, day, data, flag, f FROM " + t + " WHERE id = ?")) {
                p.setLong(1, 1);
                try (ResultSet r = p.executeQuery()) {
                    check(r.next(), "row 1");
                    check(r.getString(1).equals("nasty"), "name");
                    check(r.getString(2).equals(nasty), "note read back: " + r.getString(2));
                    check(r.getBigDecimal(3).compareTo(price) == 0, "price: " + r.getBigDecimal(3));
                    check(r.getTimestamp(4).equals(at), "at: " + r.getTimestamp(4));
                    check(r.getDate(5).toString().equals("2026-01-02"), "day: " + r.getDate(5));
                    check(Arrays.equals(r.getBytes(6), blob), "blob read back");
                    check(r.getBoolean(7) && r.getDouble(8) == 1.5, "flag and f");
                }
                p.setLong(1, 2);
                try (ResultSet r = p.executeQuery()) {
                    check(r.next() && r.getString(2) == null && r.getBytes(6) == null && r.getObject(3) == null, "NULLs");
                }
            }
            check(leaderLong(leaderUrl, "SELECT COUNT(*) FROM " + t + " WHERE note = " + quoted(nasty)) == 1,
                    "the note on the leader");

            // A batch (autocommit): one row per entry, or one multi-row INSERT,
            // as the driver's options say; the keys come back either way. With
            // rewriteBatchedStatements and generated keys the driver sends one
            // query of several INSERTs instead (chorus logs each with its id);
            // without generated keys, one multi-row INSERT.
            String batchInsert = "INSERT INTO " + t + " (name, price, data) VALUES (?, ?, ?)";
            try (PreparedStatement p = c.prepareStatement(batchInsert, Statement.RETURN_GENERATED_KEYS)) {
                addRows(p);
                int[] counts = p.executeBatch();
                check(counts.length == 100, "batch counts: " + counts.length);
                for (int n : counts) check(n == 1 || n == Statement.SUCCESS_NO_INFO, "batch count " + n);
                List<Long> keys = new ArrayList<>();
                try (ResultSet k = p.getGeneratedKeys()) {
                    while (k.next()) keys.add(k.getLong(1));
                }
                check(keys.size() == 100, "batch keys: " + keys);
                for (int i = 1; i < keys.size(); i++) check(keys.get(i) == keys.get(0) + i, "consecutive keys " + keys);
            }
            check(leaderLong(leaderUrl, "SELECT MAX(id) - MIN(id) + 1 = COUNT(*) AND COUNT(*) = 100 FROM " + t
                    + " WHERE name LIKE 'b%'") == 1, "the batch's rows, with consecutive ids");
            // Other batches: with rewriteBatchedStatements the driver sends them
            // as one query of several statements.
            try (PreparedStatement p = c.prepareStatement("UPDATE " + t + " SET n = n + ?, at = NOW(6) WHERE name = ?")) {
                for (int i = 0; i < 20; i++) {
                    p.setInt(1, i + 1);
                    p.setString(2, "b" + i);
                    p.addBatch();
                }
                check(p.executeBatch().length == 20, "update batch");
            }
            try (Statement s = c.createStatement()) {
                s.addBatch("UPDATE " + t + " SET n = n + 1000 WHERE name = 'b1'");
                s.addBatch("INSERT INTO " + t + " (name) VALUES ('statement batch')");
                s.addBatch("DELETE FROM " + t + " WHERE name = 'b99'");
                check(s.executeBatch().length == 3, "statement batch");
            }
            long changed = leaderLong(leaderUrl, "SELECT COUNT(*) FROM " + t + " WHERE n > 0 OR name = 'statement batch'")
                    + 100 - leaderLong(leaderUrl, "SELECT COUNT(*) FROM " + t + " WHERE name LIKE 'b%'");
            check(changed == 22, "rows the batches changed: " + changed);

            // Errors: the right code, and the connection goes on.
            try (PreparedStatement p = c.prepareStatement("INSERT INTO " + t + " (name) VALUES (?)")) {
                p.setString(1, "nasty");
                p.executeUpdate();
                throw new AssertionError("a duplicate name was accepted");
            } catch (SQLIntegrityConstraintViolationException e) {
                check(e.getErrorCode() == 1062 && "23000".equals(e.getSQLState()),
                        "duplicate: " + e.getErrorCode() + " " + e.getSQLState());
            }
            try (Statement s = c.createStatement()) {
                s.executeQuery("SELECT * FROM no_such_table");
                throw new AssertionError("a missing table was found");
            } catch (SQLException e) {
                check(e.getErrorCode() == 1146 && "42S02".equals(e.getSQLState()), "missing table: " + e.getErrorCode());
            }
            check(c.isValid(5), "the connection is valid after the errors");

            // Transactions.
            c.setAutoCommit(false);
            try (PreparedStatement p = c.prepareStatement("INSERT INTO " + t + " (name, at) VALUES (?, ?)",
                    Statement.RETURN_GENERATED_KEYS)) {
                for (int i = 0; i < 5; i++) {
                    p.setString(1, "t" + i);
                    p.setTimestamp(2, at);
                    p.executeUpdate();
                    try (ResultSet k = p.getGeneratedKeys()) {
                        check(k.next(), "a key in the transaction");
                    }
                }
            }
            check(leaderLong(leaderUrl, "SELECT COUNT(*) FROM " + t + " WHERE name LIKE 't%'") == 0, "not yet committed");
            c.commit();
            check(leaderLong(leaderUrl, "SELECT COUNT(*) FROM " + t + " WHERE name LIKE 't%'") == 5, "committed");
            try (Statement s = c.createStatement()) {
                s.executeUpdate("INSERT INTO " + t + " (name) VALUES ('rolled back')");
                s.executeUpdate("UPDATE " + t + " SET n = -1");
            }
            c.rollback();
            check(leaderLong(leaderUrl, "SELECT COUNT(*) FROM " + t + " WHERE name = 'rolled back' OR n = -1") == 0,
                    "rolled back");
            try (Statement s = c.createStatement()) {
                s.executeUpdate("INSERT INTO " + t + " (name) VALUES ('sp kept')");
                Savepoint sp = c.setSavepoint("sp1");
                s.executeUpdate("INSERT INTO " + t + " (name) VALUES ('sp undone')");
                c.rollback(sp);
                s.executeUpdate("INSERT INTO " + t + " (name) VALUES ('sp kept too')");
                // A failing statement undoes itself only.
                try {
                    s.executeUpdate("INSERT INTO " + t + " (name) VALUES ('t1')");
                    throw new AssertionError("a duplicate name was accepted in a transaction");
                } catch (SQLException e) {
                    check(e.getErrorCode() == 1062, "duplicate in a transaction: " + e.getErrorCode());
                }
            }
            c.commit();
            check(leaderLong(leaderUrl, "SELECT COUNT(*) FROM " + t + " WHERE name LIKE 'sp %'") == 2, "savepoint");
            // Switching autocommit back on commits what is open.
            try (Statement s = c.createStatement()) {
                s.executeUpdate("UPDATE " + t + " SET n = 42 WHERE name = 'sp kept'");
            }
            c.setAutoCommit(true);
            check(leaderLong(leaderUrl, "SELECT n FROM " + t + " WHERE name = 'sp kept'") == 42, "committed by setAutoCommit");

            // A large value, sent in pieces (COM_STMT_SEND_LONG_DATA with
            // server-side prepares).
            byte[] big = new byte[3 << 20];
            for (int i = 0; i < big.length; i++) big[i] = (byte) (i * 31);
            try (Statement s = c.createStatement()) {
                s.execute("ALTER TABLE " + t + " ADD COLUMN big LONGBLOB");
            }
            try (PreparedStatement p = c.prepareStatement("UPDATE " + t + " SET big = ? WHERE name = ?")) {
                p.setBinaryStream(1, new java.io.ByteArrayInputStream(big), big.length);
                p.setString(2, "nulls");
                check(p.executeUpdate() == 1, "the large value stored");
            }
            try (PreparedStatement p = c.prepareStatement("SELECT big FROM " + t + " WHERE name = ?")) {
                p.setString(1, "nulls");
                try (ResultSet r = p.executeQuery()) {
                    check(r.next() && Arrays.equals(r.getBytes(1), big), "the large value read back");
                }
            }

            // DatabaseMetaData: catalog queries through chorus.
            DatabaseMetaData md = c.getMetaData();
            check(md.getDatabaseProductName().equals("MariaDB") || md.getDatabaseProductName().equals("MySQL"),
                    "product " + md.getDatabaseProductName());
            check(md.getDatabaseProductVersion().contains("MariaDB"), "version " + md.getDatabaseProductVersion());
            check(md.supportsTransactions() && md.supportsSavepoints(), "transactions");
            String catalog = c.getCatalog();
            try (ResultSet r = md.getTables(catalog, null, t, new String[] {"TABLE"})) {
                check(r.next() && r.getString("TABLE_NAME").equals(t), "getTables");
            }
            List<String> columns = new ArrayList<>();
            try (ResultSet r = md.getColumns(catalog, null, t, "%")) {
                while (r.next()) columns.add(r.getString("COLUMN_NAME"));
            }
            check(columns.equals(Arrays.asList("id", "name", "note", "price", "at", "day", "data", "flag", "f", "created",
                    "n", "big")), "getColumns " + columns);
            try (ResultSet r = md.getPrimaryKeys(catalog, null, t)) {
                check(r.next() && r.getString("COLUMN_NAME").equals("id") && !r.next(), "getPrimaryKeys");
            }
            boolean unique = false;
            try (ResultSet r = md.getIndexInfo(catalog, null, t, true, false)) {
                while (r.next()) unique |= "name".equals(r.getString("COLUMN_NAME"));
            }
            check(unique, "getIndexInfo finds the unique name");
        }
        System.out.println("MariadbJdbcClient: ok");
    }

    static void addRows(PreparedStatement p) throws SQLException {
        for (int i = 0; i < 100; i++) {
            p.setString(1, "b" + i);
            p.setBigDecimal(2, BigDecimal.valueOf(i, 2));
            p.setBytes(3, ("row " + i).getBytes(StandardCharsets.UTF_8));
            p.addBatch();
        }
    }

    /// A string as a literal for the leader check (hex: no escaping rules).
    static String quoted(String s) {
        StringBuilder b = new StringBuilder("_utf8mb4 X'");
        for (byte x : s.getBytes(StandardCharsets.UTF_8)) b.append(String.format("%02X", x));
        return b.append("'").toString();
    }
}
