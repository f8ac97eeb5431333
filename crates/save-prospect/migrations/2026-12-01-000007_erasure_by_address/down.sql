DROP TABLE erasures_due;
