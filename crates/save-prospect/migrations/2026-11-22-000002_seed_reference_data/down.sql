DELETE FROM roles;
DELETE FROM countries;
