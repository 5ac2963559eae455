-- Avatar accounts, schema version 2: the accounts join the vault's one schema.
--
-- A row holds no name: it is found by a keyed blind index (HMAC of the normalised name)
-- and the display name is sealed (AES-256-GCM, the index as associated data), both under
-- sub-keys of the accounts key, which is derived from one keyfile key. Which key that is
-- lives in `meta` as `accounts_key` (a key id, checked through `key_check` like the
-- mail's); it is recorded by the program at the first open, since only the keyfile can
-- tell it for a database written by schema 1.
--
-- IF NOT EXISTS: espmail before schema 2 created this same table by itself (with an
-- `accounts_meta` table beside it, which the program replaces by the `meta` row once it
-- has found the key that table names). The rows stay as they are: nothing is re-keyed.

CREATE TABLE IF NOT EXISTS accounts (
    name_index  BLOB PRIMARY KEY NOT NULL, -- HMAC of the normalised name
    sealed_name BLOB NOT NULL,             -- AES-256-GCM: nonce | name | tag
    pw_hash     TEXT,                      -- scrypt$...; NULL: trusted front end only
    created     INTEGER NOT NULL           -- unix seconds
) WITHOUT ROWID;
