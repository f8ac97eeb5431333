-- Reference data: what the sign-up form offers.
CREATE TABLE countries (
    code text PRIMARY KEY,          -- ISO 3166-1 alpha-2, or '-' for "Not telling"
    name text NOT NULL
);

CREATE TABLE roles (
    code text PRIMARY KEY,          -- short code, or '-' for "Not telling"
    name text NOT NULL
);

-- One row per prospect. After "forget me" the personal columns are NULL and
-- deleted_at is set: the row stays as a tombstone so that a late or
-- redelivered event can never bring the data back.
CREATE TABLE prospects (
    id             uuid PRIMARY KEY,
    email          text,
    -- Case-insensitive uniqueness of e-mail addresses.
    email_key      text GENERATED ALWAYS AS (lower(email)) STORED,
    first_name     text,
    last_name      text,
    company_name   text,
    country_code   text,
    role_code      text,
    signed_up_at   timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    deleted_at     timestamptz,
    -- Stream sequence of the last event applied to this row: events older
    -- than it are ignored, so redeliveries out of order cannot win.
    last_event_seq bigint NOT NULL
);

CREATE UNIQUE INDEX prospects_email_key ON prospects (email_key);

-- Every event applied, by its ce-id: a redelivered event is skipped.
CREATE TABLE applied_events (
    event_id    uuid PRIMARY KEY,
    prospect_id uuid NOT NULL,
    stream_seq  bigint NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
