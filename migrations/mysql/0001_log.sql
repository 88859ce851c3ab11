-- chorus's bookkeeping on a MySQL/MariaDB server, in its own database.
-- One log for the whole server: a MySQL transaction may touch several
-- databases, so LSNs are per server, not per database.
-- Applied on every node (idempotent); the leader uses lsn and log, each
-- follower applied and its copy of the log.
CREATE DATABASE IF NOT EXISTS _chorus;
-- The LSN counter: its one row is the lock that orders writing transactions.
CREATE TABLE IF NOT EXISTS _chorus.lsn (id TINYINT PRIMARY KEY, lsn BIGINT NOT NULL) ENGINE=InnoDB;
INSERT IGNORE INTO _chorus.lsn VALUES (1, 0);
-- One entry per committed writing transaction (JSON, see replication/mysql/entry.rs).
CREATE TABLE IF NOT EXISTS _chorus.log (
  lsn BIGINT PRIMARY KEY,
  committed_at DATETIME(6) NOT NULL,
  entry LONGBLOB NOT NULL
) ENGINE=InnoDB;
-- On a follower: the last LSN applied, written in the same transaction as the entry's statements.
CREATE TABLE IF NOT EXISTS _chorus.applied (
  id TINYINT PRIMARY KEY,
  lsn BIGINT NOT NULL,
  applied_at DATETIME(6) NOT NULL
) ENGINE=InnoDB;
INSERT IGNORE INTO _chorus.applied VALUES (1, 0, NOW(6));
