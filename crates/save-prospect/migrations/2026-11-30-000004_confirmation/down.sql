DROP TABLE pending_changes;
DROP INDEX prospects_unconfirmed;
DROP INDEX prospects_email_lookup;
DROP INDEX prospects_confirmed_email_key;
-- Several unconfirmed sign-ups may share an address: keep the earliest.
DELETE FROM prospects p USING prospects q
    WHERE p.email_key = q.email_key AND p.deleted_at IS NULL AND q.deleted_at IS NULL
      AND (q.confirmed_at IS NOT NULL AND p.confirmed_at IS NULL
           OR (q.confirmed_at IS NULL) = (p.confirmed_at IS NULL) AND q.signed_up_at < p.signed_up_at);
CREATE UNIQUE INDEX prospects_email_key ON prospects (email_key);
ALTER TABLE prospects DROP COLUMN confirmed_at;
