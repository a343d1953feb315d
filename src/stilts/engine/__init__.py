"""The execution backend beside the pipeline: the study's out-of-date DVC stages as Dask tasks.

stages     which stages are out of date, and the graph between them (from `dvc status` and the pipeline)
clusters   where they run: a local cluster, a running scheduler (tcp://), or SLURM jobs (dask-jobqueue)
cell       one stage as a task on a worker: its command run warm, killed with its worker
guard      the same kill-with-the-worker for commands run without the warm server
transport  how inputs reach a worker and outputs come home: a shared filesystem, or a DVC remote
progress   the one-line progress report
runner     the head: submit, watch, stop on failure, record with one `dvc commit`
"""
