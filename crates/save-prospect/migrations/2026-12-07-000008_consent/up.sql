-- What each prospect agreed to (GDPR art. 7(1)): the sign-up's consent
-- (consent_agreed_at NULL: signed up before consent was recorded), and
-- where the confirmation came from when the operator records the client.
-- Personal data like the rest of the row: an erasure sets them all NULL.
ALTER TABLE prospects
    ADD COLUMN consent_notice_version   text,
    ADD COLUMN consent_agreed_at        timestamptz,
    ADD COLUMN consent_client_address   text,
    ADD COLUMN consent_user_agent       text,
    ADD COLUMN confirmed_client_address text,
    ADD COLUMN confirmed_user_agent     text,
    ADD CONSTRAINT consent_is_whole CHECK ((consent_notice_version IS NULL) = (consent_agreed_at IS NULL));
