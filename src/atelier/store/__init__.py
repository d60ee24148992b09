"""Where things live: the database, the job queue and blob storage. Uses nothing above it."""
