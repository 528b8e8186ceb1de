"""The login-node side of a job: compose, run directory, submission, pipeline recipes (no torch)."""
