"""The demo's stages: generate data -> pretrain MAE, MixedAE and MixedAE without segment
embeddings (same budget) -> convert -> fine-tune UperNet and Mask R-CNN (FPN protocol) from
MAE, MixedAE and random init over several seeds -> evaluate -> figures -> report.

A stage whose outputs exist is reused; an interrupted training resumes from its checkpoint.
Training runs ``tools/train.py`` in child processes on configs written to ``<out>/configs``,
with fixed threads, seeded data and (on CPU) deterministic algorithms: reruns give the same
numbers on the same machine.
"""
from __future__ import annotations

import os
import os.path as osp
import sys
from typing import Callable, List, Optional

from mmengine.config import Config

from mixedae.datasets.synthetic import MANIFEST, matches_manifest
from mixedae.utils.io import atomic_write
from ..repo import Repo
from .presets import METHODS, PRETRAINS, TASKS, Preset
from .run_configs import finetune_config, pretrain_config
from .runner import child_env, stream
from .schedule import Stage


class Demo:
    """The stages of one demo run in ``out`` (data in ``data``), at the scale of ``preset``,
    with the tools and configs of the checkout ``repo``."""

    def __init__(self, repo: Repo, out: str, data: str, preset: Preset):
        self.repo, self.out, self.data, self.p = repo, out, data, preset
        self.env = child_env(repo.root, preset.threads)

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

    def write_config(self, cfg: Config, run: str) -> str:
        """``<out>/configs/<run>.py``: the config a child trains or tests with."""
        path = osp.join(self.out, 'configs', f'{run}.py')
        os.makedirs(osp.dirname(path), exist_ok=True)
        with atomic_write(path) as f:
            f.write(cfg.pretty_text)
        return path

    # ----------------------------------------------------------------- stages
    def tool(self, name: str, *args: str, log: str) -> None:
        stream([sys.executable, self.repo.path(f'tools/{name}'), *args], self.log(log),
               self.env, self.repo.root)

    def train(self, config: str, work_dir: str, log: str) -> None:
        resume = ['--resume'] if osp.exists(osp.join(work_dir, 'last_checkpoint')) else []
        amp = ['--amp'] if self.p.amp else []
        self.tool('train.py', config, '--work-dir', work_dir, *resume, *amp, log=log)

    def pretrain(self, name: str, seed: int) -> None:
        run = f'pretrain_{name}_s{seed}'
        cfg = pretrain_config(self.repo, self.p, name, self.data, seed)
        self.train(self.write_config(cfg, run), self.pretrain_dir(name, seed), run)

    def convert(self, name: str, seed: int) -> None:
        self.tool('convert_checkpoint.py', self.pretrain_ckpt(name, seed),
                  self.backbone(name, seed), '--src-format', 'mixedae',
                  log=f'convert_{name}_s{seed}')

    def finetune(self, task: str, method: str, seed: int) -> None:
        run = f'{task}_{method}_s{seed}'
        wd = osp.join(self.out, run)
        cfg = finetune_config(self.repo, self.p, task, self.data, seed,
                              self.backbone(method, self.p.seeds[0]))
        config = self.write_config(cfg, run)
        ckpt = osp.join(wd, f'iter_{self.p.finetune_iters[task]}.pth')
        if not osp.exists(ckpt):
            self.train(config, wd, run)
        self.tool('test.py', config, ckpt, '--work-dir', wd, '--out-metrics',
                  self.metrics(task, method, seed), log=run)

    def figures(self) -> None:
        seed = self.p.seeds[0]
        config = self.write_config(
            pretrain_config(self.repo, self.p, 'mixedae', self.data, seed), 'figures')
        images = osp.join(self.data, 'ade', 'images', 'validation')
        common = ['--image-dir', images, '--tile', '96']
        self.tool('visualize_attention.py', config,
                  '--checkpoint', f'MAE={self.pretrain_ckpt("mae", seed)}',
                  '--checkpoint', f'MixedAE={self.pretrain_ckpt("mixedae", seed)}',
                  *common, '--num', '4', '--out', osp.join(self.out, 'attention.png'),
                  log='figures')
        self.tool('visualize_mixing.py', config,
                  '--checkpoint', self.pretrain_ckpt('mixedae', seed), *common,
                  '--out', osp.join(self.out, 'mixing.png'), log='figures')

    def generate_data(self) -> None:
        self.tool('make_synthetic_data.py', self.data, '--num-train', str(self.p.num_train),
                  '--num-val', str(self.p.num_val), '--size', str(self.p.scene_size),
                  '--seed', '0', '--replace', log='data')

    def data_current(self) -> bool:
        """Whether the data folder holds exactly the preset's data set (its manifest)."""
        size = (self.p.scene_size, self.p.scene_size)
        return matches_manifest(self.data, self.p.num_train, self.p.num_val, size, seed=0)

    def stages(self, report: Callable[[], None]) -> List[Stage]:
        """Every stage in order; ``report`` writes the report (the last stage)."""
        stages = [Stage('generate data', 'data', [osp.join(self.data, MANIFEST)],
                        self.generate_data, self.data_current)]
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
        stages.append(Stage('report', 'report', [osp.join(self.out, 'report.md')], report))
        return stages
