"""Running the demo's children: the tools of a checkout in subprocesses with a fixed thread
count, their output appended to a log, MMEngine's training progress condensed to one line."""
from __future__ import annotations

import os
import os.path as osp
import re
import subprocess
import time
from typing import Dict, List, Optional

from ..repo import Repo

_PROGRESS = re.compile(r'(Epoch|Iter)\(train\)\s*(\[[^\]]*\](?:\s*\[[^\]]*\])?).*?eta: (\S+)')


class CommandFailed(RuntimeError):
    """A child command of the demo exited with an error status (not a mistake of the demo's
    user: its message ends with the tail of the command's log)."""


def child_env(repo: Repo, threads: int) -> Dict[str, str]:
    """Environment of the training children: fixed thread counts (float sums depend on them)
    and the checkout ``repo`` first on the import path."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               OMP_WAIT_POLICY='PASSIVE', PYTHONHASHSEED='0', PYTHONUNBUFFERED='1',
               CUBLAS_WORKSPACE_CONFIG=':4096:8')
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [repo.root, env.get('PYTHONPATH')]))
    return env


def progress_line(line: str) -> Optional[str]:
    """An MMEngine training log line -> ``Epoch [3][20/37] eta 0:01:23 loss 0.91 ...``
    (the loss terms, e.g. ``decode.loss_ce``, and hr_acc), or None for other lines."""
    m = _PROGRESS.search(line)
    if not m:
        return None
    kind, where, eta = m.groups()
    terms = re.findall(r'(?<!\S)([\w.]*loss\w*|hr_acc): (\S+)', line)
    return ' '.join([kind, re.sub(r'\s+', '', where), 'eta', eta] +
                    [f'{k} {v}' for k, v in terms])


def stream(cmd: List[str], log: str, env: Dict[str, str], cwd: str,
           every_s: float = 15.0) -> None:
    """Run ``cmd`` in ``cwd`` with its output appended to ``log``; print MMEngine's training
    progress at most every ``every_s`` seconds. A failure raises :class:`CommandFailed` with the
    log's tail."""
    os.makedirs(osp.dirname(log), exist_ok=True)
    last = 0.0
    with open(log, 'a') as f:
        f.write(f'\n$ {" ".join(cmd)}\n')
        f.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd,
                                env=env, text=True, bufsize=1)
        for line in proc.stdout:
            f.write(line)
            progress = progress_line(line)
            if progress and time.time() - last >= every_s:
                last = time.time()
                print(f'         {progress}', flush=True)
        returncode = proc.wait()
    if returncode:
        with open(log) as f:
            tail = f.read()[-3000:]
        raise CommandFailed(f'command failed ({returncode}): {" ".join(cmd)}\n'
                            f'--- last lines of {log} ---\n{tail}')


def fmt(seconds: float) -> str:
    """``12m05s``."""
    m, s = divmod(int(round(seconds)), 60)
    return f'{m}m{s:02d}s'
