-- A sweep's cursor is where its scan stands (integrations.oms.view_scan.Mark): the greatest Updated handled and
-- every record id handled at that second, since TrackVia stamps to the second and orders a second's records
-- in no promised way. One id (0014's cursor_id) could not say which records of that second were done.

ALTER TABLE oms.sweep_runs ADD COLUMN cursor_ids bigint[] NOT NULL DEFAULT '{}';
ALTER TABLE oms.sweep_runs DROP COLUMN cursor_id;
