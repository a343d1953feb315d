"""The execution backend beside the pipeline: the study's out-of-date DVC stages as Dask tasks.

clusters   where they run: a local cluster, a running scheduler (tcp://), or SLURM jobs (dask-jobqueue)
cell       one stage as a task on a worker: its command run as `dvc repro` runs it, killed with its worker
guard      the process that ties a cell's command to the worker that started it
transport  how inputs reach a worker and outputs come home: a shared filesystem, or a DVC remote
runner     the head: submit, watch, stop on failure, record with one `dvc commit`
"""
