"""shipline web: the one web service (GitLab webhooks; the log search page joins it)."""
