"""GPU smoke check that needs no network; see mixedae/suite/gpu_check.py for what it runs.

    tools/gpu_check.sh                                  # on a CUDA machine (ViT-B scale)
    .venv/bin/python tools/gpu_check.py --allow-cpu --scale tiny  # every row on CPU, tiny configs

Prints one table (and the benchmark tables) and writes the same, with the raw timings, as JSON
to --out.
"""
import argparse
import os.path as osp
import time

import torch

from mixedae.suite.gpu_check import SCALES, run_all, summary, write_report
from mixedae.suite.repo import Repo
from mixedae.utils.cli import run_tool
from mixedae.utils.errors import DeviceUnavailableError

REPO = Repo(osp.dirname(osp.dirname(osp.abspath(__file__))))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--scale', choices=sorted(SCALES), default='base',
                        help='base: ViT-B configs (default); tiny: the tiny CPU configs')
    parser.add_argument('--allow-cpu', action='store_true',
                        help='run on CPU when there is no CUDA device (fp32; for tests)')
    parser.add_argument('--out', default='work_dirs/gpu_check.json',
                        help='where the JSON report goes (default: %(default)s)')
    args = parser.parse_args(argv)
    if torch.cuda.is_available():
        device = torch.device('cuda')
    elif args.allow_cpu:
        device = torch.device('cpu')
    else:
        raise DeviceUnavailableError(
            f'no CUDA device visible to torch {torch.__version__} (CUDA build: '
            f'{torch.version.cuda}); this check needs a GPU (--allow-cpu runs it on CPU)')
    start = time.perf_counter()
    report = run_all(REPO, device, args.scale)
    report['seconds'] = time.perf_counter() - start
    write_report(args.out, report)
    print(summary(report))
    print(f'gpu_check: report written to {args.out}')
    return 1 if any(r['status'] == 'FAIL' for r in report['rows']) else 0


if __name__ == '__main__':
    run_tool(main)
