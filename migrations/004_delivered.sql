-- Schema version 4: replayed rows are refused (issue 10 L3). A delivered (acked) row is
-- remembered here by a mark (an HMAC of its random id under a keyfile sub-key, so no row
-- id of an old copy can be matched against it), with the row's expiry day, until that
-- day: a copy of the row
-- put back into `mail` (from an old backup, by someone who can write the database) is
-- then recognised at loading and quarantined instead of delivered a second time. After
-- the expiry day the purge would delete such a copy anyway (and for rows written from
-- this version on, the expiry day is bound into the row's authentication, so it cannot
-- be moved).
--
-- What it shows to whoever holds the database without the keyfile: how many messages
-- were delivered and until which day they would have waited, not to whom.

CREATE TABLE delivered (
    mark       BLOB PRIMARY KEY NOT NULL,
    expiry_day INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX delivered_by_expiry ON delivered (expiry_day);
