-- An owner's erasure erases every sign-up that holds the address: those are
-- noted here in the erasure's transaction (before the address is gone) and
-- erased by erasures of their own, published once it commits (and by every
-- expiry sweep, should that fail). A row goes once its erasure is stored.
CREATE TABLE erasures_due (
    prospect_id uuid PRIMARY KEY,
    because_of  uuid NOT NULL,
    noted_at    timestamptz NOT NULL DEFAULT now()
);
