"""Container logs: an agent per Docker host follows json-file logs with host-side checkpoints and writes them,
exactly once, into a full-text store (SQLite FTS5 embedded, PostgreSQL shared) that the CLI and the web page
search and a scheduled flow maintains."""
