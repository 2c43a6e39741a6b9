"""A sweep's life, owned here: opening and closing a multirun (`multirun`: the sweep record, the
parent run, the report, the counts, closing on a signal) and running one job (`one_job`: typed
config, skip / retry / rounds, inline or isolated, tracking, save, progress, the objective), with
what the process ends with kept in one `Outcome` (`outcome`). `sweep.app` and `sweep.callbacks`
are Hydra's doors into these; the refusals made before anything starts are `sweep.refusals`.

Import the submodules themselves: this package imports nothing, so a light caller (the
callback) does not load a job's runtime.
"""
