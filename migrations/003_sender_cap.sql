-- Schema version 3: the per-sender cap (issue 10 M4). One sender may leave at most
-- `max_per_sender` messages waiting for one recipient, so one sender (or a handful of
-- throwaway avatars, each capped) cannot fill a box alone.
--
-- `pair` is a keyed blind index of (recipient, sender): an HMAC under the same keyfile
-- sub-key as `blind`, over both normalised names, so it names nobody. What it does show to
-- whoever holds the database without the keyfile: which of one recipient's rows came from
-- the same sender (not who). Rows written before this version have none and are not
-- counted.

ALTER TABLE mail ADD COLUMN pair BLOB;

CREATE INDEX mail_by_pair ON mail (pair, key_id);
