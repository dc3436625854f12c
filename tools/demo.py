#!/usr/bin/env python
"""The whole benchmark, small, on the built-in generated data (`make demo`).

generate data -> pretrain MAE and MixedAE (same budget) -> convert -> fine-tune UperNet
(ADE20K format) and Mask R-CNN (COCO format, FPN protocol) from MAE, MixedAE and random init
-> evaluate -> work_dirs/demo/report.md and report.png.

Every stage checks its outputs and is skipped when they exist (``--force`` reruns all); a
training stage that was interrupted resumes from its last checkpoint. Tiny ViTs, CPU (or the
GPU when present). A small-scale sanity benchmark, not the paper's protocol.
"""
import argparse
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, List

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
from mixedae.benchmark import bar_chart, collect, results_markdown  # noqa: E402
from mixedae.utils.io import atomic_write  # noqa: E402

PY = sys.executable
SEED = 0
DATA = dict(num_train=600, num_val=100, size=64)
PRETRAIN_EPOCHS = 60
FINETUNE_ITERS = dict(ade20k=300, coco=300)
CONFIGS = dict(
    pretrain_mae='configs/pretrain/mae_vit-tiny-p8_1xb16-coslr-4e_tiny-32.py',
    pretrain_mixedae='configs/pretrain/mixedae_vit-tiny-p8_1xb16-coslr-4e_tiny-32.py',
    ade20k='configs/ade20k/upernet_vit-tiny-p8_1xb4-40iter_ade20k-synthetic-64.py',
    coco='configs/coco/mask-rcnn_vit-tiny-p8_fpn_1xb2-20iter_coco-synthetic-64.py',
)
METHODS = ('mae', 'mixedae', 'scratch')
README_START, README_END = '<!-- demo-report:start -->', '<!-- demo-report:end -->'


@dataclass
class Stage:
    name: str
    outputs: List[str]
    run: Callable[[], None]
    expected_s: float          # rough duration on 2 CPU cores, for the ETA only

    def done(self) -> bool:
        return all(osp.exists(p) for p in self.outputs)


def sh(cmd: List[str], log: str) -> None:
    """Run a command with its output in ``log``; a failure shows the log's tail."""
    os.makedirs(osp.dirname(log), exist_ok=True)
    with open(log, 'a') as f:
        f.write(f'\n$ {" ".join(cmd)}\n')
        f.flush()
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    if proc.returncode:
        with open(log) as f:
            tail = f.read()[-3000:]
        raise SystemExit(f'command failed ({proc.returncode}): {" ".join(cmd)}\n'
                         f'--- last lines of {log} ---\n{tail}')


def train(config: str, work_dir: str, final_ckpt: str, opts: List[str], log: str) -> None:
    if osp.exists(osp.join(work_dir, final_ckpt)):
        return
    resume = ['--resume'] if osp.exists(osp.join(work_dir, 'last_checkpoint')) else []
    sh([PY, 'tools/train.py', config, '--work-dir', work_dir, *resume, '--cfg-options', *opts],
       log)


def fmt(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f'{m}m{s:02d}s'


class Demo:
    def __init__(self, out: str, data: str):
        self.out, self.data = out, data
        self.timings_file = osp.join(out, 'timings.json')
        self.timings = json.load(open(self.timings_file)) if osp.exists(self.timings_file) else {}

    def stages(self) -> List[Stage]:
        d, o = self.data, self.out
        stages = [Stage('generate data', [osp.join(d, 'coco/annotations/instances_val2017.json')],
                        lambda: sh([PY, 'tools/make_synthetic_data.py', d,
                                    '--num-train', str(DATA['num_train']),
                                    '--num-val', str(DATA['num_val']),
                                    '--size', str(DATA['size']), '--seed', str(SEED)],
                                   osp.join(o, 'logs/data.log')), 10)]
        for m in ('mae', 'mixedae'):
            wd = osp.join(o, f'pretrain_{m}')
            ckpt = f'epoch_{PRETRAIN_EPOCHS}.pth'
            stages.append(Stage(
                f'pretrain {m}', [osp.join(wd, ckpt)],
                lambda m=m, wd=wd, ckpt=ckpt: train(
                    CONFIGS[f'pretrain_{m}'], wd, ckpt,
                    [f'train_dataloader.dataset.data_root={d}/pretrain',
                     f'train_cfg.max_epochs={PRETRAIN_EPOCHS}', 'default_hooks.logger.interval=50',
                     f'randomness.seed={SEED}'], osp.join(o, f'logs/pretrain_{m}.log')), 110))
            backbone = osp.join(o, f'backbones/{m}.pth')
            stages.append(Stage(
                f'convert {m}', [backbone],
                lambda m=m, wd=wd, ckpt=ckpt, backbone=backbone: sh(
                    [PY, 'tools/convert_checkpoint.py', osp.join(wd, ckpt), backbone,
                     '--src-format', 'mixedae'], osp.join(o, f'logs/convert_{m}.log')), 5))
        for task in ('ade20k', 'coco'):
            for m in METHODS:
                stages.append(Stage(f'{task} {m}', [self.metrics(task, m)],
                                    lambda task=task, m=m: self.finetune(task, m),
                                    70 if task == 'ade20k' else 90))
        stages.append(Stage('report', [osp.join(o, 'report.md'), osp.join(o, 'report.png')],
                            self.report, 3))
        return stages

    def metrics(self, task: str, method: str) -> str:
        return osp.join(self.out, 'metrics', f'{task}_{method}.json')

    def finetune(self, task: str, method: str) -> None:
        d, o = self.data, self.out
        wd = osp.join(o, f'{task}_{method}')
        iters = FINETUNE_ITERS[task]
        if task == 'ade20k':
            data = [f'{k}.dataset.data_root={d}/ade' for k in
                    ('train_dataloader', 'val_dataloader', 'test_dataloader')]
        else:
            data = [f'{k}.dataset.data_root={d}/coco/' for k in
                    ('train_dataloader', 'val_dataloader', 'test_dataloader')]
            data += [f'{k}.ann_file={d}/coco/annotations/instances_val2017.json'
                     for k in ('val_evaluator', 'test_evaluator')]
        init = [] if method == 'scratch' else [
            'model.backbone.init_cfg.type=Pretrained',
            f'model.backbone.init_cfg.checkpoint={osp.join(o, "backbones", method + ".pth")}']
        schedule = [f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
                    f'randomness.seed={SEED}',
                    'default_hooks.checkpoint.interval=100', 'default_hooks.logger.interval=50']
        if task == 'coco':
            schedule.append(f'param_scheduler.1.milestones=[{int(iters * 0.75)}]')
        log = osp.join(o, f'logs/{task}_{method}.log')
        train(CONFIGS[task], wd, f'iter_{iters}.pth', data + init + schedule, log)
        sh([PY, 'tools/test.py', CONFIGS[task], osp.join(wd, f'iter_{iters}.pth'),
            '--work-dir', wd, '--out-metrics', self.metrics(task, method),
            '--cfg-options', *data, f'randomness.seed={SEED}'], log)

    def runs(self) -> List[dict]:
        return [dict(method=m, task=t, config=CONFIGS[t], work_dir='', metrics=self.metrics(t, m))
                for m in METHODS for t in ('ade20k', 'coco')]

    def report(self) -> None:
        rows = collect(self.runs())
        names = {'mae': 'MAE (ours, demo)', 'mixedae': 'MixedAE (ours, demo)',
                 'scratch': 'random init (ours, demo)'}
        for r in rows:
            r['method'] = names[r['method']]
        t = self.timings
        pre = {m: t.get(f'pretrain {m}') for m in ('mae', 'mixedae')}
        lines = [
            '# mixedae demo report',
            '',
            'A small-scale sanity benchmark on the built-in generated data, **not** the paper\'s '
            'protocol: tiny ViTs (4 blocks, 64-d, 8x8 patches), '
            f'{DATA["num_train"]} train / {DATA["num_val"]} val scenes of '
            f'{DATA["size"]}x{DATA["size"]} px with 5 object classes, seed {SEED}. '
            f'Pretraining: {PRETRAIN_EPOCHS} epochs at 32 px for each method; fine-tuning: '
            f'{FINETUNE_ITERS["ade20k"]} iterations of UperNet and {FINETUNE_ITERS["coco"]} of '
            'Mask R-CNN (FPN protocol) per initialisation. The published ViT-B numbers are '
            'given for context only; they come from full-scale runs.',
            '',
            '## Pretraining time',
            '',
            '| method | epochs | wall time (s) | time vs MAE |',
            '|---|---|---|---|',
        ]
        for m in ('mae', 'mixedae'):
            ratio = f'{pre[m] / pre["mae"]:.2f}' if pre[m] and pre['mae'] else 'n/a'
            wall = f'{pre[m]:.0f}' if pre[m] else 'n/a'
            lines.append(f'| {names[m]} | {PRETRAIN_EPOCHS} | {wall} | {ratio} |')
        lines += ['', 'Wall time of the pretraining process, start-up included, from this run '
                  '(stages reused from an earlier run keep the time measured then).', '',
                  '## Transfer results', '', results_markdown(rows), '',
                  '![demo results](report.png)', '']
        total = sum(v for v in t.values())
        lines.append(f'Total time of the stages: {fmt(total)} on {os.cpu_count()} CPU cores.')
        with atomic_write(osp.join(self.out, 'report.md')) as f:
            f.write('\n'.join(lines) + '\n')
        bar_chart(rows, osp.join(self.out, 'report.png'),
                  'mixedae demo (tiny ViTs, generated data)')

    def run(self, force: bool) -> None:
        stages = self.stages()
        if force:
            for p in (self.out, self.data):
                shutil.rmtree(p, ignore_errors=True)
            self.timings = {}
        os.makedirs(self.out, exist_ok=True)
        start = time.time()
        spent_expected = spent_actual = 0.0
        for i, stage in enumerate(stages, 1):
            remaining = sum(s.expected_s for s in stages[i - 1:] if not s.done())
            pace = spent_actual / spent_expected if spent_expected else 1.0
            print(f'[{i}/{len(stages)}] {stage.name:<16} elapsed {fmt(time.time() - start)}, '
                  f'ETA {fmt(remaining * pace)}', flush=True)
            if stage.done() and stage.name != 'report':
                print('         reused (outputs exist)', flush=True)
                continue
            t0 = time.time()
            stage.run()
            took = time.time() - t0
            if stage.name != 'report':
                self.timings[stage.name] = took
                with atomic_write(self.timings_file) as f:
                    json.dump(self.timings, f, indent=1)
            spent_expected += stage.expected_s
            spent_actual += took
            print(f'         done in {fmt(took)}', flush=True)
        print(f'demo finished in {fmt(time.time() - start)}: {osp.join(self.out, "report.md")}')


def update_readme(out: str) -> None:
    """Replace the README's demo section with the report (table and plot)."""
    readme = osp.join(ROOT, 'README.md')
    text = open(readme).read()
    if README_START not in text or README_END not in text:
        raise SystemExit(f'{readme}: markers {README_START} / {README_END} not found')
    os.makedirs(osp.join(ROOT, 'docs'), exist_ok=True)
    shutil.copy(osp.join(out, 'report.png'), osp.join(ROOT, 'docs/demo_report.png'))
    report = open(osp.join(out, 'report.md')).read().split('\n', 2)[2]
    report = report.replace('![demo results](report.png)', '![demo results](docs/demo_report.png)')
    report = report.replace('## ', '#### ')
    head, rest = text.split(README_START, 1)
    tail = rest.split(README_END, 1)[1]
    with atomic_write(readme) as f:
        f.write(f'{head}{README_START}\n{report}\n{README_END}{tail}')


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='work_dirs/demo', help='work and report folder')
    parser.add_argument('--data', default='data/synthetic', help='generated data folder')
    parser.add_argument('--force', action='store_true', help='delete earlier results and rerun')
    parser.add_argument('--update-readme', action='store_true',
                        help='copy the report table and plot into README.md / docs/')
    args = parser.parse_args(argv)
    demo = Demo(osp.abspath(args.out), osp.abspath(args.data))
    demo.run(args.force)
    if args.update_readme:
        update_readme(demo.out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
