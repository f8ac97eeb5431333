DROP TABLE applied_events;
DROP TABLE prospects;
DROP TABLE roles;
DROP TABLE countries;
