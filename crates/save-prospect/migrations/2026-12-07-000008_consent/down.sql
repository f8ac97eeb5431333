ALTER TABLE prospects
    DROP CONSTRAINT consent_is_whole,
    DROP COLUMN consent_notice_version,
    DROP COLUMN consent_agreed_at,
    DROP COLUMN consent_client_address,
    DROP COLUMN consent_user_agent,
    DROP COLUMN confirmed_client_address,
    DROP COLUMN confirmed_user_agent;
