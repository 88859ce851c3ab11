-- On a follower: the LSN of a DDL entry whose statement is running (or ran,
-- if the applier stopped before recording it). MySQL commits DDL implicitly,
-- so the DDL and its record cannot commit together; when the same entry is
-- applied again, an error saying the change is already there means it is.
ALTER TABLE _chorus.applied ADD COLUMN ddl_lsn BIGINT NOT NULL DEFAULT 0;
