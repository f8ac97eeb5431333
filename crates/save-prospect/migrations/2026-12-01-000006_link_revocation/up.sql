-- Proof of owning an address ends when the record moves to another address
-- (or its owner asks for a new link and an end to the old ones): links
-- issued before this time open nothing. NULL: every link since the sign-up.
ALTER TABLE prospects ADD COLUMN links_not_before timestamptz;
