-- Which database this is. When chorus first prepares a replicated database
-- on the leader it gives it a random id; each follower's copy takes the
-- leader's id when chorus prepares it. A follower copy whose id differs is
-- left over from an earlier database of the same name (dropped on the
-- leader while the follower was unreachable): its applied LSN counts
-- another log, so chorus does not apply to it (src/replication/migrate.rs).
ALTER TABLE _chorus.lsn ADD COLUMN origin uuid;
