"""Process-wide outcome of a `python -m sweep` invocation, read for the exit status."""

failed_jobs = 0
