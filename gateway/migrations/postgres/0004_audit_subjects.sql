-- The subject index of the exchange log, built behind the log instead of inside every append.
--
-- An index on audit_records (worker_ref, seq) takes one insert at a random place per record: each group
-- commit dirtied about one index page per record and wrote (and on SQLite fsynced) every one of them,
-- which cost more than the records themselves. audit_subjects holds the same pairs, inserted by the
-- writer in bulk (thousands of records per transaction, see AuditStore::index_subjects), so a page is
-- written once per bulk instead of once per record, and appends touch only pages at the end of the log.
--
-- audit_head.subjects_through: every record with seq <= it that has a worker_ref is in audit_subjects;
-- records after it are found by scanning the (short) tail of audit_records. Queries by subject read both
-- in one statement, so they always see every record.
CREATE TABLE audit_subjects (
    worker_ref TEXT    NOT NULL,
    seq        BIGINT NOT NULL,
    PRIMARY KEY (worker_ref, seq)
);

ALTER TABLE audit_head ADD COLUMN subjects_through BIGINT NOT NULL DEFAULT 0;

INSERT INTO audit_subjects (worker_ref, seq)
SELECT worker_ref, seq FROM audit_records WHERE worker_ref <> '';
UPDATE audit_head SET subjects_through = seq WHERE id = 1;

DROP INDEX audit_records_worker;
