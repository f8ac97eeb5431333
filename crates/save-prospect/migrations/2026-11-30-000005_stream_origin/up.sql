-- Which event stream this database was built from (its name and creation
-- time). A stream that is recreated, restored or served elsewhere numbers its
-- events from 1 again, and last_event_seq would then take newer events for
-- older ones: save-prospect refuses to run against another stream.
CREATE TABLE stream_origin (
    one         boolean PRIMARY KEY DEFAULT true CHECK (one),
    identity    text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
