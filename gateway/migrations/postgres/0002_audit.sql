-- The exchange log (see gateway/src/audit/). Append-only by convention, not by trigger: an attacker with
-- database access could drop a trigger as easily as edit a row, and the point of the hash chain, the
-- Merkle tree and the signed checkpoints is to detect such edits, not to prevent them.
--
-- Conventions: times are microseconds since the unix epoch (UTC); hashes are 64 lower-case hex digits;
-- u64 quantities (seq, latency_us, tree sizes) are stored bit for bit in signed 64-bit columns.

-- One row per exchange record. seq is the record's position in the log: 1, 2, 3, … without gaps.
CREATE TABLE audit_records (
    seq               BIGINT  PRIMARY KEY,
    time_us           BIGINT  NOT NULL,  -- receipt time
    request_id        TEXT    NOT NULL,
    trace_id          TEXT    NOT NULL,
    caller_dept       TEXT    NOT NULL,
    caller_role       TEXT    NOT NULL,
    cert_serial       TEXT    NOT NULL,
    cert_fingerprint  TEXT    NOT NULL,
    method            TEXT    NOT NULL,
    purpose           TEXT    NOT NULL,
    legal_basis_kind  SMALLINT NOT NULL,  -- 0 none, 1 consent, 2 statute
    legal_basis_value TEXT,              -- consent id or statute citation; NULL when kind = 0
    worker_ref        TEXT    NOT NULL,
    sources_consulted TEXT    NOT NULL,  -- JSON array of strings, in order, e.g. ["TAX","SI"]
    disclosed_fields  TEXT    NOT NULL,  -- JSON array of strings
    claims_verified   TEXT    NOT NULL,  -- JSON array of strings
    outcome_code      INTEGER NOT NULL,
    outcome_reason    TEXT    NOT NULL,
    latency_us        BIGINT  NOT NULL,
    prev_hash         TEXT    NOT NULL,
    record_hash       TEXT    NOT NULL
);
CREATE INDEX audit_records_time ON audit_records (time_us);
CREATE INDEX audit_records_dept_time ON audit_records (caller_dept, time_us);
CREATE INDEX audit_records_worker ON audit_records (worker_ref, seq);
CREATE INDEX audit_records_purpose ON audit_records (purpose, seq);
CREATE INDEX audit_records_method ON audit_records (method, seq);

-- Interior nodes (level >= 1) of the RFC 6962 Merkle tree over the records: the perfect subtree over
-- leaves [idx·2^level, (idx+1)·2^level), stored when it completes. Leaf hashes (level 0) are not stored:
-- they are SHA-256(0x00 || record_hash) of audit_records. Kept when records are pruned.
CREATE TABLE audit_nodes (
    level SMALLINT NOT NULL,
    idx   BIGINT  NOT NULL,
    hash  TEXT    NOT NULL,
    PRIMARY KEY (level, idx)
);

-- The head of the log, one row. Every append locks it first, which serialises appenders across
-- processes. frontier: the Merkle compact range of the first tree_size leaves, the hashes of
-- Frontier::node_ids(tree_size) concatenated as hex. pruned_through: records with seq <= it were deleted
-- by retention (0 = none).
CREATE TABLE audit_head (
    id             SMALLINT PRIMARY KEY CHECK (id = 1),
    seq            BIGINT  NOT NULL,
    head_hash      TEXT    NOT NULL,
    tree_size      BIGINT  NOT NULL,
    frontier       TEXT    NOT NULL,
    pruned_through BIGINT  NOT NULL
);
INSERT INTO audit_head (id, seq, head_hash, tree_size, frontier, pruned_through)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000', 0, '', 0);

-- Signed checkpoints: seq 1, 2, 3, …; each covers records 1..tree_size.
CREATE TABLE audit_checkpoints (
    seq          BIGINT PRIMARY KEY,
    tree_size    BIGINT NOT NULL UNIQUE,
    root_hash    TEXT   NOT NULL,
    head_hash    TEXT   NOT NULL,
    signed_at_us BIGINT NOT NULL,
    key_id       TEXT   NOT NULL,
    signature    TEXT   NOT NULL  -- Ed25519 signature, 128 lower-case hex digits
);
