-- Consent records (see gateway/src/consent/). Immutable once granted, except for the lifecycle columns
-- (revoked_*, revocation_reason, superseded_by), each set at most once by a conditional UPDATE and never
-- cleared. Rows are never deleted: the audit log names consent ids as legal bases, and those must resolve.
--
-- Conventions: times are microseconds since the unix epoch (UTC); hashes are 64 lower-case hex digits;
-- categories are comma-separated FieldCategory codes in contract order ("identity,employment").
-- SQLite tables are STRICT, so that a value always has its column's type.
CREATE TABLE consents (
    consent_id              TEXT    PRIMARY KEY,  -- "cs_" + 32 lower-case hex digits, server-assigned
    worker_ref              TEXT    NOT NULL,     -- the worker, by pseudonymous reference only
    grantee_dept            TEXT    NOT NULL,
    purpose                 TEXT    NOT NULL,
    categories              TEXT    NOT NULL,
    valid_from_us           INTEGER NOT NULL,
    valid_until_us          INTEGER NOT NULL,     -- exclusive
    created_us              INTEGER NOT NULL,
    captured_by_dept        TEXT    NOT NULL,
    captured_by_role        TEXT    NOT NULL,
    captured_by_serial      TEXT    NOT NULL,
    captured_by_fingerprint TEXT    NOT NULL,
    evidence_sha256         TEXT    NOT NULL,
    request_id              TEXT,                 -- the capturing department's idempotency key
    -- The consent this one replaced. UNIQUE: a consent is superseded at most once.
    supersedes_consent_id   TEXT    UNIQUE REFERENCES consents (consent_id),
    -- The consent that replaced this one (the back-link, so that one primary-key read answers a check).
    -- Not a foreign key: it is set before the new row is inserted, in the same transaction.
    superseded_by           TEXT,
    revoked_us              INTEGER,
    revoked_by_dept         TEXT,
    revoked_by_role         TEXT,
    revoked_by_serial       TEXT,
    revoked_by_fingerprint  TEXT,
    revocation_reason       TEXT,
    CHECK (valid_until_us > valid_from_us),
    CHECK (revoked_us IS NULL OR superseded_by IS NULL),
    CHECK ((revoked_us IS NULL) = (revocation_reason IS NULL))
) STRICT;
-- Idempotent grants: one consent per (capturing department, request id).
CREATE UNIQUE INDEX consents_request ON consents (captured_by_dept, request_id) WHERE request_id IS NOT NULL;
-- A worker's consents, newest first, with keyset paging on (created_us, consent_id).
CREATE INDEX consents_worker ON consents (worker_ref, created_us, consent_id);
