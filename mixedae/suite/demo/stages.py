"""What each stage of the demo does (their order: :mod:`.plan`), with the paths they share.

An interrupted training resumes from its checkpoint. Training runs ``tools/train.py`` in child
processes on configs written to ``<out>/configs``, with fixed threads, seeded data and (on CPU)
deterministic algorithms: reruns give the same numbers on the same machine.
"""
from __future__ import annotations

import json
import os
import os.path as osp
import sys
from mmengine.config import Config

from mixedae.datasets.synthetic import matches_manifest
from mixedae.models.backbones.checkpoint_layouts import convert_checkpoint
from mixedae.utils.io import atomic_write
from ..repo import Repo
from ..runner import has_checkpoint
from ..stats import read_validation
from ..step0 import write_step0_backbone
from .presets import Preset
from .run_configs import finetune_config, pretrain_config, probe_config
from .runner import child_env, stream


class Demo:
    """The stages of one demo run in ``out`` (data in ``data``), at the scale of ``preset``,
    with the tools and configs of the checkout ``repo``."""

    def __init__(self, repo: Repo, out: str, data: str, preset: Preset):
        self.repo, self.out, self.data, self.p = repo, out, data, preset
        self.env = child_env(repo, preset.threads)

    # ------------------------------------------------------------------ paths
    def pretrain_dir(self, name: str, seed: int) -> str:
        return osp.join(self.out, f'pretrain_{name}_s{seed}')

    def pretrain_ckpt(self, name: str, seed: int) -> str:
        return osp.join(self.pretrain_dir(name, seed), f'epoch_{self.p.pretrain_epochs}.pth')

    def backbone(self, method: str, seed: int) -> str:
        """The converted encoder of ``method`` (``seed`` is its pretraining seed); for
        ``scratch`` (random init), the step-0 encoder of MAE's run of that seed."""
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
        resume = ['--resume'] if has_checkpoint(work_dir) else []
        amp = ['--amp'] if self.p.amp else []
        self.tool('train.py', config, '--work-dir', work_dir, *resume, *amp, log=log)

    def pretrain(self, name: str, seed: int) -> None:
        run = f'pretrain_{name}_s{seed}'
        cfg = pretrain_config(self.repo, self.p, name, self.data, seed)
        self.train(self.write_config(cfg, run), self.pretrain_dir(name, seed), run)

    def convert(self, name: str, seed: int) -> None:
        """The encoder of a pretraining checkpoint, as ``tools/convert_checkpoint.py`` writes
        it (in-process: it is file I/O only)."""
        os.makedirs(osp.dirname(self.backbone(name, seed)), exist_ok=True)
        convert_checkpoint(self.pretrain_ckpt(name, seed), self.backbone(name, seed), 'mixedae')

    def init_backbone(self, seed: int) -> None:
        """Random init of seed ``seed``: the encoder MAE's pretraining run of that seed starts
        from (MAE's initialisation, :mod:`~mixedae.suite.step0`), in-process."""
        config = self.write_config(pretrain_config(self.repo, self.p, 'mae', self.data, seed),
                                   f'init_s{seed}')
        write_step0_backbone(config, seed, self.backbone('scratch', seed))

    def transfer(self, task: str, method: str, seed: int) -> None:
        """Train one transfer run, ``probe`` (linear probe of the frozen encoder), ``ade20k`` or
        ``coco`` (full fine-tuning), from the encoder of ``method``'s pretraining seed ``seed``
        (for ``scratch``, the step-0 encoder of that seed); its metrics are the validation at
        the last iteration (the config's test split is its val split)."""
        run = f'{task}_{method}_s{seed}'
        wd = osp.join(self.out, run)
        backbone = self.backbone(method, seed)
        cfg = (probe_config(self.repo, self.p, self.data, seed, backbone) if task == 'probe'
               else finetune_config(self.repo, self.p, task, self.data, seed, backbone))
        iters = cfg.train_cfg.max_iters
        if read_validation(wd, iters) is None:
            self.train(self.write_config(cfg, run), wd, run)
        metrics = read_validation(wd, iters)
        if metrics is None:
            raise RuntimeError(f'{run}: no validation logged at iteration {iters} in {wd}')
        os.makedirs(osp.dirname(self.metrics(task, method, seed)), exist_ok=True)
        with atomic_write(self.metrics(task, method, seed)) as f:
            json.dump(metrics, f, indent=2)

    def hr_acc_file(self, name: str) -> str:
        return osp.join(self.out, 'hr_acc', f'{name}.json')

    def measure_hr_acc(self, name: str) -> None:
        """hr_acc on validation scenes of the untrained and the pretrained encoders of method
        ``name`` (one of :data:`HOMOLOGOUS`), evaluated with ``name``'s config; with MixedAE's,
        also the MAE and naive-mixing encoders (same mixing, segment embeddings zero)."""
        seeds = self.p.pretrain_seeds
        config = self.write_config(
            pretrain_config(self.repo, self.p, name, self.data, seeds[0]), f'hr_acc_{name}')
        others = ('mae', 'naivemix') if name == 'mixedae' else ()
        args = [a for s in seeds for a in ('--init', f'init_s{s}={s}')]
        args += [a for m in (name, *others) for s in seeds
                 for a in ('--checkpoint', f'{m}_s{s}={self.pretrain_ckpt(m, s)}')]
        self.tool('measure_hr_acc.py', config, '--image-dir', self.val_images(),
                  '--num', str(self.p.hr_images), '--seed', '0', *args,
                  '--out', self.hr_acc_file(name), log=f'hr_acc_{name}')

    def val_images(self) -> str:
        return osp.join(self.data, 'ade', 'images', 'validation')

    def figures(self) -> None:
        seed = self.p.pretrain_seeds[0]
        config = self.write_config(
            pretrain_config(self.repo, self.p, 'mixedae', self.data, seed), 'figures')
        common = ['--image-dir', self.val_images(), '--tile', '96']
        shown = [a for m in ('mae', 'naivemix', 'mixedae', 'mixedae-tied')
                 for a in ('--checkpoint', f'{m}={self.pretrain_ckpt(m, seed)}')]
        self.tool('visualize_attention.py', config, *shown, *common, '--num', '4',
                  '--out', osp.join(self.out, 'attention.png'), log='figures')
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
