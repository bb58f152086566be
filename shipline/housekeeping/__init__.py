"""Housekeeping that keeps a long-running platform healthy: what it removes, what it keeps, and why.

- ``files``: delivery workspaces and rendered release directories past their retention — never the
  workspace of a delivery that is still running, never the directory of a release that is live (or being
  deployed) in its environment;
- ``images``: app images (``apps/{app}`` manifests) that no release needs — every digest live in an
  environment or among the app's newest released ones stays, and so do the newest pushed images;
- ``report``: one row per thing looked at (removed, kept, failed, and why), the run's table.

The space the registry's deleted manifests held is freed by the registry's own blob collection, which needs
the registry read-only: ``shipline.stack.registry_maintenance`` does it for the stack's own registry. The
policy (retentions, images kept, dry run) is the operator's ``shipline-housekeeping`` block, read at each
run (``policy``); the ``housekeeping`` flow and ``shipline housekeeping`` (``sweep``) run the same code.
"""
