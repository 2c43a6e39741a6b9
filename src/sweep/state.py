"""Process-wide outcome of a `python -m sweep` invocation, read for the exit status."""

failed_jobs = 0
# jobs of this process whose result.json could not be written (disk full): a multirun's end
# counts them as failed, since the folder it reports from does not hold them
unsaved_jobs = 0
# the multirun's tracking config and parent run id while it runs, so that a signal can close it
open_parent: tuple | None = None
