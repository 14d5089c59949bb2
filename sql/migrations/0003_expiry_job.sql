-- 0003_expiry_job.sql — the pending-transfer expiry sweep is a job.
--
-- Every meridiand runs an expiry thread. The job row below makes one of
-- them sweep per interval, whichever claims it first (an UPDATE of a row
-- picked with FOR UPDATE SKIP LOCKED, which moves run_at one interval
-- ahead), and keeps the outcome of the last sweep (attempts, last_error)
-- in the cell's database, where it fails over with the money and where
-- operators can read it. At most one open row per kind.
CREATE UNIQUE INDEX jobs_one_open_expiry ON jobs (kind)
    WHERE kind = 'expire_pending' AND done_at IS NULL;
INSERT INTO jobs (kind) VALUES ('expire_pending');
