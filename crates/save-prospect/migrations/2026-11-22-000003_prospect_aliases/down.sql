DROP TABLE prospect_aliases;
