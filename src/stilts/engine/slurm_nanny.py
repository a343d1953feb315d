"""`dask worker --preload-nanny stilts.engine.slurm_nanny`: a SLURM job's Dask worker outlives SIGUSR1.

SLURM's `--signal=USR1@120` goes to every process of the job's steps, the nanny and its worker included,
and SIGUSR1 ends a Python process that does not handle it. Ignored from the nanny's start (the worker it
spawns inherits that), it reaches only the cells, which save their state and exit 75; the worker then puts
its job back in the queue (`cell.requeue_slurm_job`). The cells' guards and commands set their own handlers.
"""

from __future__ import annotations

import signal


def dask_setup(nanny) -> None:
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
