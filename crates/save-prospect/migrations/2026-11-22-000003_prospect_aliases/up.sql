-- A sign-up whose e-mail already belongs to a prospect updates that prospect;
-- its own prospect id then points here at the prospect it was merged into,
-- so that its status and its manage link still work.
CREATE TABLE prospect_aliases (
    alias_id    uuid PRIMARY KEY,
    prospect_id uuid NOT NULL REFERENCES prospects (id)
);
