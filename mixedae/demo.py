"""`make demo`: the whole benchmark, small, on the built-in generated data.

generate data -> pretrain MAE, MixedAE and MixedAE without segment embeddings (same budget) ->
convert -> fine-tune UperNet (ADE20K format) and Mask R-CNN (COCO format, FPN protocol) from
MAE, MixedAE and random init over several seeds -> evaluate -> attention and mixing figures ->
``report.md`` with per-seed values, mean +/- std, the homologous-recognition curves and the
figures.

Every stage checks its outputs and is skipped when they exist; an interrupted training stage
resumes from its last checkpoint. Training runs in child processes (``tools/train.py``) with a
fixed thread count, seeded data order and augmentation and (on CPU) deterministic algorithms,
so the same machine gives the same numbers.
"""
from __future__ import annotations

import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from mixedae.benchmark import ANCHORS, COLUMNS, markdown_table, read_metrics
from mixedae.utils.io import atomic_write
from mixedae.reporting import (comparison_sentence, format_spread, plot_curves, plot_seeds,
                               read_scalars, steady_time_per_iter)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PY = sys.executable
CONFIGS = dict(
    mae='configs/pretrain/mae_vit-tiny-p8_1xb16-coslr-4e_tiny-32.py',
    mixedae='configs/pretrain/mixedae_vit-tiny-p8_1xb16-coslr-4e_tiny-32.py',
    ade20k='configs/ade20k/upernet_vit-tiny-p8_1xb4-40iter_ade20k-synthetic-64.py',
    coco='configs/coco/mask-rcnn_vit-tiny-p8_fpn_1xb2-20iter_coco-synthetic-64.py',
)
#: pretraining runs: name -> (config key, extra options). ``mixedae-noseg`` is the
#: segment-embedding-off ablation, pretrained for its hr_acc curve only.
PRETRAINS = {'mae': ('mae', []), 'mixedae': ('mixedae', []),
             'mixedae-noseg': ('mixedae', ['model.backbone.use_segment_embed=False'])}
METHODS = ('mae', 'mixedae', 'scratch')
TASKS = ('ade20k', 'coco')
NAMES = {'mae': 'MAE', 'mixedae': 'MixedAE', 'mixedae-noseg': 'MixedAE, no segment embeddings',
         'scratch': 'random init'}
README_START, README_END = '<!-- demo-report:start -->', '<!-- demo-report:end -->'


@dataclass(frozen=True)
class Preset:
    """The scale of one demo: data, model, schedules, seeds and how the children run."""
    name: str
    num_train: int
    num_val: int
    scene_size: int                 # generated scenes are scene_size x scene_size px
    pretrain_size: int              # pretraining crops are resized to this
    arch: Dict[str, int]            # ViT: patch_size, embed_dim, depth, num_heads
    decoder: Dict[str, int]         # MAE decoder: decoder_embed_dim, depth, num_heads
    pretrain_epochs: int
    pretrain_batch: int
    pretrain_lr: float
    finetune_iters: Dict[str, int]
    finetune_batch: Dict[str, int]
    seeds: Tuple[int, ...]          # fine-tuning seeds of every (method, task); the
                                    # pretraining runs once per method, with seeds[0]
    hr_seeds: Tuple[int, ...]       # further MixedAE pretraining seeds, for the spread of
                                    # hr_acc only (not converted or fine-tuned)
    amp: bool                       # fp16 autocast with dynamic loss scaling (GPU)
    threads: int                    # OMP / MKL threads of every child process
    deterministic: bool             # torch deterministic algorithms (CPU: all ops have them)
    workers: int                    # dataloader workers of the pretraining
    log_interval: int               # iterations per MMEngine log record (curves, timing)
    expected_s: Dict[str, float] = field(default_factory=dict)  # per stage kind, for the ETA

    def describe(self) -> str:
        a = self.arch
        heads = f'{a["num_heads"]} head{"s" if a["num_heads"] > 1 else ""}'
        return (f'ViT ({a["depth"]} blocks, {a["embed_dim"]}-d, {heads}, '
                f'{a["patch_size"]}x{a["patch_size"]} patches); {self.num_train} train / '
                f'{self.num_val} val generated scenes of {self.scene_size}x{self.scene_size} px '
                f'with 5 object classes. Pretraining: {self.pretrain_epochs} epochs at '
                f'{self.pretrain_size} px, batch {self.pretrain_batch}, G = 4 for MixedAE, '
                f'whose homologous layers start with keys equal to queries. '
                f'Fine-tuning: {self.finetune_iters["ade20k"]} iterations of UperNet and '
                f'{self.finetune_iters["coco"]} of Mask R-CNN (FPN protocol) per '
                f'initialisation and seed')


PRESETS = {
    'cpu': Preset(
        name='cpu', num_train=600, num_val=100, scene_size=64, pretrain_size=64,
        # one 64-d attention head; the tiny MixedAE config starts each homologous layer's keys
        # as copies of its queries (tied_qk_init): final hr_acc 0.56-0.61 over nine seeds,
        # against 0.33-0.45 with MAE's independent initialisation (docs/method.md)
        arch=dict(patch_size=8, embed_dim=64, depth=4, num_heads=1),
        decoder=dict(decoder_embed_dim=32, depth=2, num_heads=4),
        pretrain_epochs=20, pretrain_batch=16, pretrain_lr=1e-3,
        finetune_iters=dict(ade20k=300, coco=300), finetune_batch=dict(ade20k=4, coco=2),
        seeds=(0, 1), hr_seeds=(1, 2), amp=False, threads=2, deterministic=True,
        workers=0, log_interval=37,
        expected_s=dict(data=15, pretrain=60, convert=5, ade20k=40, coco=50, figures=10,
                        report=5)),
    'gpu': Preset(
        name='gpu', num_train=4000, num_val=500, scene_size=64, pretrain_size=64,
        arch=dict(patch_size=8, embed_dim=384, depth=12, num_heads=6),
        decoder=dict(decoder_embed_dim=256, depth=4, num_heads=8),
        pretrain_epochs=50, pretrain_batch=256, pretrain_lr=1.5e-4 * 10,
        finetune_iters=dict(ade20k=400, coco=400), finetune_batch=dict(ade20k=16, coco=8),
        seeds=(0, 1, 2), hr_seeds=(1, 2), amp=True, threads=4, deterministic=False,
        workers=12, log_interval=15,
        expected_s=dict(data=90, pretrain=150, convert=10, ade20k=45, coco=60, figures=15,
                        report=5)),
}


def out_indices(depth: int) -> List[int]:
    """Four evenly spaced blocks, the last one included (UperNet / FPN inputs)."""
    return [depth * k // 4 - 1 for k in range(1, 5)]


def pretrain_options(p: Preset, data: str, seed: int) -> List[str]:
    """``--cfg-options`` that scale the tiny pretraining configs to preset ``p``."""
    opts = [f'model.backbone.{k}={v}' for k, v in p.arch.items()]
    opts += [f'model.decoder.{k}={v}' for k, v in p.decoder.items()]
    return opts + [
        f'model.backbone.img_size={p.pretrain_size}',
        f'train_dataloader.dataset.pipeline.1.size={p.pretrain_size}',
        f'train_dataloader.dataset.data_root={data}/pretrain',
        f'train_dataloader.batch_size={p.pretrain_batch}',
        f'train_dataloader.num_workers={p.workers}',
        f'train_dataloader.persistent_workers={p.workers > 0}',
        f'optim_wrapper.optimizer.lr={p.pretrain_lr}',
        f'train_cfg.max_epochs={p.pretrain_epochs}',
        f'default_hooks.logger.interval={p.log_interval}',
        f'log_processor.window_size={p.log_interval}',
        f'randomness.seed={seed}', f'randomness.deterministic={p.deterministic}']


def finetune_options(p: Preset, task: str, data: str, seed: int,
                     backbone: Optional[str]) -> List[str]:
    """``--cfg-options`` of one fine-tuning run (``backbone`` None: random init)."""
    a, d = p.arch, p.arch['embed_dim']
    opts = [f'model.backbone.{k}={v}' for k, v in a.items()]
    opts.append(f'model.backbone.out_indices={out_indices(a["depth"])}')
    if task == 'ade20k':
        opts += [f'model.neck.embed_dim={d}', f'model.decode_head.in_channels={[d] * 4}',
                 f'model.auxiliary_head.in_channels={d}']
        opts += [f'{k}.dataset.data_root={data}/ade' for k in
                 ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    else:
        opts += [f'model.neck.0.embed_dim={d}', f'model.neck.1.in_channels={[d] * 4}']
        opts += [f'{k}.dataset.data_root={data}/coco/' for k in
                 ('train_dataloader', 'val_dataloader', 'test_dataloader')]
        opts += [f'{k}.ann_file={data}/coco/annotations/instances_val2017.json'
                 for k in ('val_evaluator', 'test_evaluator')]
    if backbone:
        opts += ['model.backbone.init_cfg.type=Pretrained',
                 f'model.backbone.init_cfg.checkpoint={backbone}']
    iters = p.finetune_iters[task]
    opts += [f'train_dataloader.batch_size={p.finetune_batch[task]}',
             f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
             f'default_hooks.checkpoint.interval={max(iters // 3, 1)}',
             f'default_hooks.logger.interval={max(iters // 10, 1)}',
             f'randomness.seed={seed}', f'randomness.deterministic={p.deterministic}']
    if task == 'coco':
        opts.append(f'param_scheduler.1.milestones=[{int(iters * 0.75)}]')
    return opts


def child_env(p: Preset) -> Dict[str, str]:
    """Environment of the training children: fixed thread counts (float sums depend on them)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(p.threads), MKL_NUM_THREADS=str(p.threads),
               OMP_WAIT_POLICY='PASSIVE', PYTHONHASHSEED='0', PYTHONUNBUFFERED='1',
               CUBLAS_WORKSPACE_CONFIG=':4096:8')
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [ROOT, env.get('PYTHONPATH')]))
    return env


_PROGRESS = re.compile(r'(Epoch|Iter)\(train\)\s*(\[[^\]]*\](?:\s*\[[^\]]*\])?).*?eta: (\S+)')


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


def stream(cmd: List[str], log: str, env: Dict[str, str], every_s: float = 15.0) -> None:
    """Run ``cmd`` with its output appended to ``log``; print MMEngine's training progress
    at most every ``every_s`` seconds. A failure shows the log's tail."""
    os.makedirs(osp.dirname(log), exist_ok=True)
    last = 0.0
    with open(log, 'a') as f:
        f.write(f'\n$ {" ".join(cmd)}\n')
        f.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT,
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
        raise SystemExit(f'command failed ({returncode}): {" ".join(cmd)}\n'
                         f'--- last lines of {log} ---\n{tail}')


def fmt(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f'{m}m{s:02d}s'


@dataclass
class Stage:
    name: str
    kind: str                       # key of Preset.expected_s
    outputs: List[str]
    run: Callable[[], None]

    def done(self) -> bool:
        return all(osp.exists(p) for p in self.outputs)


class Demo:
    """The stages of one demo run in ``out`` (data in ``data``), at the scale of ``preset``."""

    def __init__(self, out: str, data: str, preset: Preset):
        self.out, self.data, self.p = out, data, preset
        self.env = child_env(preset)
        self.timings_file = osp.join(out, 'timings.json')
        self.timings = {}
        if osp.exists(self.timings_file):
            with open(self.timings_file) as f:
                self.timings = json.load(f)

    # ------------------------------------------------------------------ paths
    def pretrain_dir(self, name: str, seed: int) -> str:
        return osp.join(self.out, f'pretrain_{name}_s{seed}')

    def pretrain_ckpt(self, name: str, seed: int) -> str:
        return osp.join(self.pretrain_dir(name, seed), f'epoch_{self.p.pretrain_epochs}.pth')

    def backbone(self, method: str, seed: int) -> Optional[str]:
        """The converted encoder of ``method`` (``seed`` is its pretraining seed)."""
        if method == 'scratch':
            return None
        return osp.join(self.out, 'backbones', f'{method}_s{seed}.pth')

    def metrics(self, task: str, method: str, seed: int) -> str:
        return osp.join(self.out, 'metrics', f'{task}_{method}_s{seed}.json')

    def log(self, name: str) -> str:
        return osp.join(self.out, 'logs', f'{name}.log')

    # ----------------------------------------------------------------- stages
    def train_cmd(self, config: str, work_dir: str, opts: List[str]) -> List[str]:
        resume = ['--resume'] if osp.exists(osp.join(work_dir, 'last_checkpoint')) else []
        amp = ['--amp'] if self.p.amp else []     # fp16: mmcv's CUDA RoIAlign has no bf16
        return [PY, 'tools/train.py', config, '--work-dir', work_dir, *resume, *amp,
                '--cfg-options', *opts]

    def pretrain(self, name: str, seed: int) -> None:
        key, extra = PRETRAINS[name]
        opts = pretrain_options(self.p, self.data, seed) + extra
        stream(self.train_cmd(CONFIGS[key], self.pretrain_dir(name, seed), opts),
               self.log(f'pretrain_{name}_s{seed}'), self.env)

    def convert(self, name: str, seed: int) -> None:
        stream([PY, 'tools/convert_checkpoint.py', self.pretrain_ckpt(name, seed),
                self.backbone(name, seed), '--src-format', 'mixedae'],
               self.log(f'convert_{name}_s{seed}'), self.env)

    def finetune(self, task: str, method: str, seed: int) -> None:
        wd = osp.join(self.out, f'{task}_{method}_s{seed}')
        opts = finetune_options(self.p, task, self.data, seed,
                                self.backbone(method, self.p.seeds[0]))
        log = self.log(f'{task}_{method}_s{seed}')
        ckpt = osp.join(wd, f'iter_{self.p.finetune_iters[task]}.pth')
        if not osp.exists(ckpt):
            stream(self.train_cmd(CONFIGS[task], wd, opts), log, self.env)
        test_opts = [o for o in opts if o.startswith(('model.', 'test_', 'randomness.'))]
        stream([PY, 'tools/test.py', CONFIGS[task], ckpt, '--work-dir', wd, '--out-metrics',
                self.metrics(task, method, seed), '--cfg-options', *test_opts], log, self.env)

    def figures(self) -> None:
        seed = self.p.seeds[0]
        images = osp.join(self.data, 'ade', 'images', 'validation')
        stream([PY, 'tools/visualize_attention.py', CONFIGS['mixedae'],
                '--checkpoint', f'MAE={self.pretrain_ckpt("mae", seed)}',
                '--checkpoint', f'MixedAE={self.pretrain_ckpt("mixedae", seed)}',
                '--image-dir', images, '--num', '4', '--tile', '96',
                '--out', osp.join(self.out, 'attention.png'), '--cfg-options',
                *pretrain_options(self.p, self.data, seed)], self.log('figures'), self.env)
        stream([PY, 'tools/visualize_mixing.py', CONFIGS['mixedae'],
                '--checkpoint', self.pretrain_ckpt('mixedae', seed), '--image-dir', images,
                '--tile', '96', '--out', osp.join(self.out, 'mixing.png'), '--cfg-options',
                *pretrain_options(self.p, self.data, seed)], self.log('figures'), self.env)

    def stages(self) -> List[Stage]:
        d = self.data
        stages = [Stage('generate data', 'data', [osp.join(d, 'coco/annotations/'
                                                            'instances_val2017.json')],
                        lambda: stream([PY, 'tools/make_synthetic_data.py', d,
                                        '--num-train', str(self.p.num_train),
                                        '--num-val', str(self.p.num_val),
                                        '--size', str(self.p.scene_size), '--seed', '0'],
                                       self.log('data'), self.env))]
        pre = self.p.seeds[0]                       # each method is pretrained once
        for name in PRETRAINS:
            stages.append(Stage(f'pretrain {name} s{pre}', 'pretrain',
                                [self.pretrain_ckpt(name, pre)],
                                lambda n=name: self.pretrain(n, pre)))
            if name in METHODS:
                stages.append(Stage(f'convert {name} s{pre}', 'convert',
                                    [self.backbone(name, pre)],
                                    lambda n=name: self.convert(n, pre)))
        for seed in self.p.hr_seeds:
            stages.append(Stage(f'pretrain mixedae s{seed}', 'pretrain',
                                [self.pretrain_ckpt('mixedae', seed)],
                                lambda s=seed: self.pretrain('mixedae', s)))
        for task in TASKS:
            for method in METHODS:
                for seed in self.p.seeds:
                    stages.append(Stage(f'{task} {method} s{seed}', task,
                                        [self.metrics(task, method, seed)],
                                        lambda t=task, m=method, s=seed: self.finetune(t, m, s)))
        stages.append(Stage('figures', 'figures', [osp.join(self.out, 'attention.png'),
                                                   osp.join(self.out, 'mixing.png')],
                            self.figures))
        stages.append(Stage('report', 'report', [osp.join(self.out, 'report.md')], self.report))
        return stages

    def run(self, force: bool) -> None:
        if force:
            for path in (self.out, self.data):
                shutil.rmtree(path, ignore_errors=True)
            self.timings = {}
        stages = self.stages()
        os.makedirs(self.out, exist_ok=True)
        start = time.time()
        spent_expected = spent_actual = 0.0
        for i, stage in enumerate(stages, 1):
            remaining = sum(self.p.expected_s.get(s.kind, 0) for s in stages[i - 1:]
                            if not s.done())
            pace = spent_actual / spent_expected if spent_expected else 1.0
            print(f'[{i}/{len(stages)}] {stage.name:<22} elapsed {fmt(time.time() - start)}, '
                  f'ETA {fmt(remaining * pace)}', flush=True)
            if stage.done() and stage.kind != 'report':
                print('         reused (outputs exist)', flush=True)
                continue
            t0 = time.time()
            stage.run()
            took = time.time() - t0
            if stage.kind != 'report':
                self.timings[stage.name] = took
                with atomic_write(self.timings_file) as f:
                    json.dump(self.timings, f, indent=1)
            spent_expected += self.p.expected_s.get(stage.kind, 0)
            spent_actual += took
            print(f'         done in {fmt(took)}', flush=True)
        print(f'demo finished in {fmt(time.time() - start)}: {osp.join(self.out, "report.md")}')

    # ----------------------------------------------------------------- report
    def seed_values(self) -> Dict[str, Dict[str, List[float]]]:
        """metric title -> method name -> per-seed values (seeds whose metrics exist)."""
        values: Dict[str, Dict[str, List[float]]] = {}
        for task, key, title, scale in COLUMNS:
            values[title] = {}
            for method in METHODS:
                found = [read_metrics(self.metrics(task, method, s)) for s in self.p.seeds]
                values[title][NAMES[method]] = [float(m[key]) * scale for m in found
                                                if m is not None and key in m]
        return values

    def report(self) -> None:
        write_report(self, self.seed_values())


def pretrain_runs(p: Preset) -> List[Tuple[str, str, int]]:
    """(label, run name, seed) of every pretraining run of preset ``p``."""
    pre = p.seeds[0]
    return ([(NAMES[name], name, pre) for name in PRETRAINS] +
            [(f'{NAMES["mixedae"]}, seed {s}', 'mixedae', s) for s in p.hr_seeds])


def _pretrain_rows(demo: Demo) -> Tuple[List[str], Dict[str, List[dict]]]:
    """Markdown rows of the pretraining table and the logged records of each run, by label."""
    p = demo.p
    runs = pretrain_runs(p)
    records = {label: read_scalars(demo.pretrain_dir(name, seed)) for label, name, seed in runs}
    per_iter = {label: steady_time_per_iter(r) for label, r in records.items()}
    mae = per_iter[NAMES['mae']]
    rows = []
    for label, name, seed in runs:
        recs = records[label]
        final = recs[-1] if recs else {}
        hr = f'{final["hr_acc"]:.3f}' if 'hr_acc' in final else '–'
        hc = f'{final["loss_hc"]:.3f}' if 'loss_hc' in final else '–'
        t = per_iter[label]
        ratio = f'{t / mae:.2f}' if t and mae else 'n/a'
        wall = demo.timings.get(f'pretrain {name} s{seed}')
        rows.append(f'| {label} | {p.pretrain_epochs} | {final.get("step", "–")} | '
                    f'{hr} | {hc} | {f"{t * 1000:.0f}" if t else "n/a"} | {ratio} | '
                    f'{f"{wall:.0f}" if wall else "n/a"} |')
    return rows, records


def write_report(demo: Demo, values: Dict[str, Dict[str, List[float]]]) -> None:
    """``report.md``, ``report.png`` (per-seed results) and ``curves.png`` of a demo."""
    p, out = demo.p, demo.out
    rows, records = _pretrain_rows(demo)
    mixed = [label for label, name, _ in pretrain_runs(p) if name.startswith('mixedae')]
    plot_curves({label: records[label] for label in mixed},
                ['hr_acc', 'loss_hc'], osp.join(out, 'curves.png'),
                'homologous recognition during pretraining', reference={'hr_acc': 0.25})
    hr_seeds = [(seed, records[label][-1]['hr_acc']) for label, name, seed in pretrain_runs(p)
                if name == 'mixedae' and records[label] and 'hr_acc' in records[label][-1]]
    hr_spread = (f'Final hr_acc of MixedAE over pretraining seeds '
                 f'{", ".join(str(s) for s, _ in hr_seeds)}: '
                 f'{format_spread([v for _, v in hr_seeds], digits=3)}; chance 0.25.'
                 if hr_seeds else 'No MixedAE pretraining logged hr_acc.')
    plot_seeds(values, osp.join(out, 'report.png'),
               f'mixedae demo, preset {p.name}: mean ± std over {len(p.seeds)} seeds')
    pre_note = (f'MAE and MixedAE are pretrained once (seed {p.seeds[0]}); the spread is that '
                'of fine-tuning from the same encoder, not of pretraining')
    scale = (f'preset `{p.name}`, {len(p.seeds)} seeds ({", ".join(map(str, p.seeds))}); '
             f'{pre_note}')
    table = [{'method': method, **{t: format_spread(v[method]) if v[method] else 'missing'
                                   for t, v in values.items()}}
             for method in (NAMES[m] for m in METHODS)]
    header = ['method'] + list(values)
    comparisons = [comparison_sentence(t, 'MixedAE', v['MixedAE'], 'MAE', v['MAE'])
                   for t, v in values.items() if v['MixedAE'] and v['MAE']]
    anchors = [dict(method=a['method'], **a['values']) for a in ANCHORS]
    total = sum(demo.timings.values())
    lines = [
        '# mixedae demo report', '',
        'A small-scale benchmark on the built-in generated data, **not** the paper\'s protocol: '
        f'{p.describe()}. Preset `{p.name}`: {p.threads} thread(s) per process, '
        f'{"fp16 autocast, " if p.amp else ""}'
        f'{"deterministic algorithms" if p.deterministic else "non-deterministic GPU kernels"}'
        '. Its numbers say nothing about ViT-B at full scale.', '',
        '## Homologous recognition', '',
        '`hr_acc`: the fraction of the keys kept by the top-K homologous attention that come '
        'from the query\'s own image (mean over layers and heads; chance = 1/G = 0.25). '
        '`loss_hc`: the weighted homologous contrastive loss. Values are MMEngine\'s logged '
        f'means over {p.log_interval} iterations; the table shows the last record.', '',
        '![hr_acc and loss_hc over pretraining](curves.png)', '',
        hr_spread, '',
        '## Pretraining', '',
        '| run | epochs | iterations | final hr_acc | final loss_hc | ms / iter | '
        'ms / iter vs MAE | wall time (s) |',
        '|---|---|---|---|---|---|---|---|',
        *rows, '',
        'ms / iter: median of MMEngine\'s per-iteration times after the first log record '
        '(steady state, robust to load from other processes). Wall time: one measurement of '
        'the whole process, start-up included, on a possibly shared machine (stages reused '
        'from an earlier run keep the time measured then).', '',
        '## Transfer results', '',
        f'Mean ± standard deviation over seeds (individual values in brackets); {scale}.', '',
        markdown_table(table, header), '',
        *[f'- {c} (demo scale, {scale}.)' for c in comparisons], '',
        '![demo results](report.png)', '',
        'Published ViT-B numbers at full scale, for context only (not comparable with the '
        'rows above):', '',
        markdown_table(anchors, header), '',
        '## Figures', '',
        'Last-layer class-token attention of the MAE and MixedAE encoders '
        f'(seed {p.seeds[0]}) on validation scenes (`tools/visualize_attention.py`):', '',
        '![attention](attention.png)', '',
        'One MixedAE step on a group of validation scenes: the mixed input, each image\'s '
        'own patches, and its reconstruction (`tools/visualize_mixing.py`):', '',
        '![mixing](mixing.png)', '',
        f'Total time of the stages: {fmt(total)} with {p.threads} thread(s) per process '
        f'({os.cpu_count()} cores visible).', '']
    with atomic_write(osp.join(out, 'report.md')) as f:
        f.write('\n'.join(lines))


def update_readme(out: str, readme: str = osp.join(ROOT, 'README.md')) -> None:
    """Replace the README's demo section with the report; its figures go to docs/ as
    ``demo_<name>.png``."""
    with open(readme) as f:
        text = f.read()
    if README_START not in text or README_END not in text:
        raise SystemExit(f'{readme}: markers {README_START} / {README_END} not found')
    with open(osp.join(out, 'report.md')) as f:
        report = f.read().split('\n', 2)[2]
    docs = osp.join(osp.dirname(readme), 'docs')
    os.makedirs(docs, exist_ok=True)
    for image in sorted(set(re.findall(r'\]\(([\w.-]+\.png)\)', report))):
        shutil.copy(osp.join(out, image), osp.join(docs, f'demo_{image}'))
        report = report.replace(f']({image})', f'](docs/demo_{image})')
    report = report.replace('\n## ', '\n#### ')
    head, rest = text.split(README_START, 1)
    tail = rest.split(README_END, 1)[1]
    with atomic_write(readme) as f:
        f.write(f'{head}{README_START}\n{report}\n{README_END}{tail}')


def main(out: str, data: str, preset: str, force: bool, readme: bool) -> None:
    demo = Demo(osp.abspath(out), osp.abspath(data), PRESETS[preset])
    demo.run(force)
    if readme:
        update_readme(demo.out)

