"""GitLab: webhook events, commit statuses, project hooks and branch heads through python-gitlab."""
