-- Registry of department certificates issued by the fedx CA.
-- Times are unix seconds (UTC). A certificate is revoked when revoked_at is set; it is never deleted,
-- so that the audit log's certificate serials always resolve.
CREATE TABLE certificates (
    serial            TEXT    PRIMARY KEY,   -- lower-case hex, no leading zero bytes
    dept              TEXT    NOT NULL,
    role              TEXT    NOT NULL,
    fingerprint       TEXT    NOT NULL UNIQUE, -- SHA-256 of the DER certificate, hex
    not_before        BIGINT  NOT NULL,
    not_after         BIGINT  NOT NULL,
    issued_at         BIGINT  NOT NULL,
    renewed_from      TEXT    REFERENCES certificates (serial),
    revoked_at        BIGINT,
    revocation_reason TEXT
);
CREATE INDEX certificates_dept ON certificates (dept, role);
CREATE INDEX certificates_revoked ON certificates (revoked_at) WHERE revoked_at IS NOT NULL;
