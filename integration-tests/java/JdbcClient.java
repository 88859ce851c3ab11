// pgjdbc through chorus, as Java applications use it: batches of prepared
// inserts into a table whose key is gen_random_uuid() (captured rows),
// generated keys, transactions, a temporary staging table, a failing row and
// CREATE INDEX CONCURRENTLY. Run by integration-tests/tests/java_clients.rs
// with chorus's JDBC URL and a direct JDBC URL of the leader (reads through
// chorus may be served by a follower that has not caught up yet).
import java.sql.*;
import java.util.HashSet;
import java.util.Set;

public class JdbcClient {
    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    public static void main(String[] args) throws Exception {
        String url = args[0], leaderUrl = args[1];
        try (Connection c = DriverManager.getConnection(url)) {
            try (Statement s = c.createStatement()) {
                s.execute("CREATE TABLE ju (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), name text UNIQUE, "
                        + "at timestamptz DEFAULT now(), n serial)");
            }
            // Autocommit batch: pgjdbc sends it as one pipeline.
            try (PreparedStatement p = c.prepareStatement("INSERT INTO ju (name) VALUES (?)")) {
                for (int i = 0; i < 300; i++) {
                    p.setString(1, "a" + i);
                    p.addBatch();
                }
                int[] counts = p.executeBatch();
                check(counts.length == 300, "batch counts");
            }
            c.setAutoCommit(false);
            Set<String> keys = new HashSet<>();
            try (PreparedStatement p = c.prepareStatement("INSERT INTO ju (name) VALUES (?)", new String[] {"id"})) {
                for (int i = 0; i < 10; i++) {
                    p.setString(1, "k" + i);
                    p.executeUpdate();
                    try (ResultSet r = p.getGeneratedKeys()) {
                        check(r.next(), "a generated key");
                        keys.add(r.getString(1));
                    }
                }
            }
            check(keys.size() == 10, "distinct generated keys");
            try (PreparedStatement p = c.prepareStatement("UPDATE ju SET at = now() WHERE name = ?")) {
                for (int i = 0; i < 10; i++) {
                    p.setString(1, "a" + i);
                    p.executeUpdate();
                }
            }
            c.commit();
            try (Statement s = c.createStatement()) {
                s.execute("CREATE TEMP TABLE st (name text)");
                s.execute("INSERT INTO st SELECT 's' || g FROM generate_series(1, 5) g");
                s.execute("INSERT INTO ju (name) SELECT name FROM st");
            }
            c.commit();
            try (PreparedStatement p = c.prepareStatement("INSERT INTO ju (name) VALUES (?)")) {
                p.setString(1, "late");
                p.executeUpdate();
                p.setString(1, "a1");
                p.executeUpdate();
                throw new AssertionError("a duplicate name was accepted");
            } catch (SQLException e) {
                check("23505".equals(e.getSQLState()), "duplicate: " + e.getSQLState());
                c.rollback();
            }
            c.setAutoCommit(true);
            try (Statement s = c.createStatement()) {
                s.execute("CREATE INDEX CONCURRENTLY ju_at ON ju (at)");
            }
        }
        // Read-your-writes through chorus: the writing connection sees its
        // row at once, and so does another one that carries its position.
        try (Connection w = DriverManager.getConnection(url); Statement s = w.createStatement()) {
            s.executeUpdate("INSERT INTO ju (name) VALUES ('ryw')");
            try (ResultSet r = s.executeQuery("SELECT count(*) FROM ju WHERE name = 'ryw'")) {
                check(r.next() && r.getLong(1) == 1, "the writer reads its row back through chorus");
            }
            String pos;
            try (ResultSet r = s.executeQuery("SHOW chorus.position")) {
                check(r.next(), "a position");
                pos = r.getString(1);
            }
            check(Long.parseLong(pos) > 0, "position " + pos);
            try (Connection o = DriverManager.getConnection(url); Statement t = o.createStatement()) {
                t.execute("SET chorus.position = '" + Long.parseLong(pos) + "'");
                try (ResultSet r = t.executeQuery("SELECT count(*) FROM ju WHERE name = 'ryw'")) {
                    check(r.next() && r.getLong(1) == 1, "a connection with the position reads the row");
                }
                try (PreparedStatement p = o.prepareStatement("SELECT count(*) FROM ju WHERE name = ?")) {
                    p.setString(1, "ryw");
                    try (ResultSet r = p.executeQuery()) {
                        check(r.next() && r.getLong(1) == 1, "the same through a prepared statement");
                    }
                }
            }
        }
        try (Connection l = DriverManager.getConnection(leaderUrl); Statement s = l.createStatement();
                ResultSet r = s.executeQuery("SELECT count(*), count(*) FILTER (WHERE name = 'late') FROM ju")) {
            check(r.next(), "a count");
            check(r.getLong(1) == 316 && r.getLong(2) == 0, "rows on the leader: " + r.getLong(1));
        }
        System.out.println("ok");
    }
}
