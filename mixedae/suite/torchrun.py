"""torchrun for ``tools/dist_{train,test}.sh`` (``tools/_torchrun.py``): the same launch, but a
rank that fails ends it with one line instead of torchrun's traceback.

``python -m torch.distributed.run`` ends a launch whose rank failed by raising
``ChildFailedError``: a table of the failures, then Python's traceback of the launcher, and
exit status 1, after the rank has printed its own one-line ``error:`` (a missing data folder
on the eight ranks of a README command gave 60 lines). Here torch's own ``parse_args`` and
``run`` launch the ranks unchanged; a failure ends with one line naming the first rank that
failed, and the launch exits with that rank's status (2 for a refused input, 75 for a
preempted training), or 1, as torchrun, when a signal killed it.
"""
from __future__ import annotations

import sys
from typing import List

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import parse_args, run


def launch(argv: List[str]) -> int:
    """Run ``torchrun ARGV``; its exit status (the first failed rank's, 1 for a signal)."""
    args = parse_args(argv)
    try:
        run(args)
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        code = failure.exitcode
        how = f'exited with status {code}' if code >= 0 else f'was killed by signal {-code}'
        failed = len(err.failures)
        print(f'error: rank {rank} of {err.name} {how} ({failed} rank'
              f'{"s" if failed > 1 else ""} failed); its own message is above',
              file=sys.stderr, flush=True)
        return code if code > 0 else 1
    return 0
