"""The process group of a run: started for CPU processes (torchrun or srun, with Slurm's task
variables read as MMEngine reads them) and closed after the run."""
from __future__ import annotations

import logging
import os
import re
import sys
from typing import Callable, Dict, Mapping

import torch

from mixedae.utils.errors import InvalidInputError


def init_cpu_distributed(launcher: str) -> None:
    """Start the gloo process group for CPU processes started by torchrun or by srun.

    MMEngine's own initialisation calls ``torch.cuda.set_device``, which fails without a GPU;
    the Runner skips it when a process group already exists. Under srun (``--launcher slurm``)
    the rank, world size and master address come from Slurm's variables
    (:func:`slurm_process_env`).
    """
    if launcher == 'none' or torch.cuda.is_available():
        return
    if launcher not in ('pytorch', 'slurm'):
        raise InvalidInputError(f'--launcher {launcher} needs GPUs; on CPU use --launcher pytorch '
                                '(tools/dist_train.sh) or slurm (tools/slurm_train.sh)')
    import torch.distributed as dist
    if dist.is_initialized():
        return
    if launcher == 'slurm':
        os.environ.update(slurm_process_env(os.environ, first_slurm_host))
    dist.init_process_group(backend='gloo')


#: the variables srun sets for each task that --launcher slurm reads.
SLURM_TASK_VARS = ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_LOCALID', 'SLURM_NODELIST')


def slurm_process_env(environ: Mapping[str, str],
                      first_host: Callable[[str], str]) -> Dict[str, str]:
    """torch.distributed's ``env://`` variables for a task that srun started, read from Slurm's
    as MMEngine's slurm launcher reads them: RANK = SLURM_PROCID, WORLD_SIZE = SLURM_NTASKS,
    LOCAL_RANK = SLURM_LOCALID, MASTER_ADDR = the first host of SLURM_NODELIST
    (``first_host(nodelist)``) unless MASTER_ADDR is set, MASTER_PORT as set, else 29500."""
    missing = [name for name in SLURM_TASK_VARS if not environ.get(name)]
    if missing:
        raise InvalidInputError(f'--launcher slurm: {", ".join(missing)} not set; start the '
                                'processes with srun (tools/slurm_train.sh, '
                                'tools/slurm_test.sh) or use --launcher pytorch')
    return dict(RANK=environ['SLURM_PROCID'], WORLD_SIZE=environ['SLURM_NTASKS'],
                LOCAL_RANK=environ['SLURM_LOCALID'],
                MASTER_ADDR=environ.get('MASTER_ADDR') or first_host(environ['SLURM_NODELIST']),
                MASTER_PORT=environ.get('MASTER_PORT') or '29500')


def first_slurm_host(nodelist: str) -> str:
    """The first host of a Slurm node list, as ``scontrol show hostnames`` would list it
    (``node[01-04,7],gpu1`` -> ``node01``; ``rack[1-2]-n[3-4]`` -> ``rack1-n3``): the first
    top-level item with each bracket replaced by its first value (the library starts no
    process)."""
    depth, end = 0, len(nodelist)
    for i, c in enumerate(nodelist):
        depth += (c == '[') - (c == ']')
        if c == ',' and depth == 0:
            end = i
            break
    item = nodelist[:end].strip()
    if not item or item.count('[') != item.count(']'):
        raise InvalidInputError(f'SLURM_NODELIST {nodelist!r} is not a Slurm node list; set '
                                'MASTER_ADDR to the first node of the job')
    return re.sub(r'\[([^\]]*)\]', lambda m: re.split(r'[-,]', m.group(1))[0], item)


def close_distributed(status: int) -> int:
    """Destroy the process group after the run; ``status`` back, or, in a gloo run, the process
    ends here with it.

    torch 2.14 leaves gloo's worker threads running after ``destroy_process_group`` once a
    ``DistributedDataParallel`` wrapper has held the group (its C++ reducer is never freed).
    A worker that frees its last finished work while the interpreter shuts down needs the GIL
    and aborts the process ("terminate called without an active exception", exit -6) after
    the run's work is done. A gloo rank therefore flushes its logs and output and ends with
    ``os._exit``, skipping the interpreter's shutdown.
    """
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return status
    gloo = dist.get_backend() == 'gloo'
    dist.barrier()
    dist.destroy_process_group()
    if gloo:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status
