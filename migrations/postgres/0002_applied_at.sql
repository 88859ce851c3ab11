-- When each log row was written on this node: on the leader that is just
-- before the transaction commits, on a follower the moment the applier
-- replayed it. The difference per LSN is the apply lag (bench/replication.sh).
ALTER TABLE _chorus.log ADD COLUMN applied_at timestamptz NOT NULL DEFAULT clock_timestamp();
