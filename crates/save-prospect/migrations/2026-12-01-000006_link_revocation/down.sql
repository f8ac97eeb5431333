ALTER TABLE prospects DROP COLUMN links_not_before;
