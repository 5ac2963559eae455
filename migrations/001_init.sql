-- ESP Mail schema, version 1.
--
-- A mail row holds nothing in the clear but what DESIGN.md allows: the recipient's blind
-- index (a keyed HMAC, not a name), the id of the keyfile key that sealed it, an expiry
-- day (days since 1970-01-01 UTC on which retention purges it; needed to purge without
-- the key), and fixed-size blobs (random id, random key part, sealed value). No plain name,
-- no avatar id, no reference to any accounts table, no send time, no length.
-- WITHOUT ROWID: the random id is the key, so not even insertion order is kept.

CREATE TABLE meta (
    name  TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO meta (name, value) VALUES ('delivered', 0);

-- One check value per keyfile key (an HKDF output under its own label): a keyfile that
-- does not match the database is refused at start.
CREATE TABLE key_check (
    key_id      INTEGER PRIMARY KEY NOT NULL,
    check_value BLOB NOT NULL
);

CREATE TABLE mail (
    id         BLOB PRIMARY KEY NOT NULL,
    blind      BLOB NOT NULL,
    key_id     INTEGER NOT NULL,
    expiry_day INTEGER NOT NULL,
    key_part   BLOB NOT NULL,
    sealed     BLOB NOT NULL
) WITHOUT ROWID;

CREATE INDEX mail_by_blind ON mail (blind, key_id);
CREATE INDEX mail_by_expiry ON mail (expiry_day);
CREATE INDEX mail_by_key ON mail (key_id);

-- Rows that failed to open: kept, never delivered, counted by stats; removed only by
-- retention (their expiry day) or by an operator (`espmail quarantine drop`).
CREATE TABLE quarantine (
    id              BLOB PRIMARY KEY NOT NULL,
    blind           BLOB NOT NULL,
    key_id          INTEGER NOT NULL,
    expiry_day      INTEGER NOT NULL,
    key_part        BLOB NOT NULL,
    sealed          BLOB NOT NULL,
    reason          TEXT NOT NULL,
    quarantined_day INTEGER NOT NULL
) WITHOUT ROWID;
