"""`dask worker --preload-nanny stilts.engine.slurm_signals --preload stilts.engine.slurm_signals`: how a SLURM
job's Dask worker answers SIGUSR1 (`--signal=USR1@120`, sent to every process of the job's steps).

SIGUSR1 ends a Python process that does not handle it. The nanny ignores it. The worker leaves it to its cells
while any run (each saves its state and exits 75, then the worker requeues the job: `cell.run_stage`); a worker
with no cell running (the warning came between two cells) requeues its job at once, so the warning is not lost
and the job does not run into its walltime. The cells' guards and commands set their own handlers.
"""

from __future__ import annotations

import signal


def dask_setup(server) -> None:
    from distributed import Nanny

    if isinstance(server, Nanny):
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # the worker process it starts inherits this
        return
    from stilts.engine import cell

    signal.signal(signal.SIGUSR1, lambda signum, frame: cell.requeue_slurm_job_if_idle())
