-- Double opt-in: a sign-up counts once the owner of its address confirmed it
-- (ProspectConfirmed). Until then several sign-ups may name one address;
-- only one confirmed, live prospect may hold it.
ALTER TABLE prospects ADD COLUMN confirmed_at timestamptz;

-- Prospects saved before confirmations existed were accepted under the old
-- rules: they count as confirmed at their sign-up, so that upgrading does not
-- erase them as unconfirmed sign-ups.
UPDATE prospects SET confirmed_at = signed_up_at WHERE deleted_at IS NULL;

DROP INDEX prospects_email_key;
CREATE UNIQUE INDEX prospects_confirmed_email_key ON prospects (email_key)
    WHERE confirmed_at IS NOT NULL AND deleted_at IS NULL;
CREATE INDEX prospects_email_lookup ON prospects (email_key) WHERE deleted_at IS NULL;
-- What the expiry of unconfirmed sign-ups scans.
CREATE INDEX prospects_unconfirmed ON prospects (signed_up_at)
    WHERE confirmed_at IS NULL AND deleted_at IS NULL;

-- An e-mail change waiting for its new address to be confirmed: the details
-- to apply, and the change request's event id, which the confirmation link
-- names. One per prospect (a newer request replaces an older one).
CREATE TABLE pending_changes (
    prospect_id  uuid PRIMARY KEY REFERENCES prospects (id) ON DELETE CASCADE,
    request_id   uuid NOT NULL,
    email        text NOT NULL,
    first_name   text NOT NULL,
    last_name    text NOT NULL,
    company_name text,
    country_code text NOT NULL,
    role_code    text NOT NULL,
    requested_at timestamptz NOT NULL,
    request_seq  bigint NOT NULL
);
