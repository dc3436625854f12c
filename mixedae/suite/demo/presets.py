"""The demo's methods and scales (presets)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Tuple

#: pretraining runs: name -> (config kind, backbone fields set on top of the preset's).
#: ``mixedae-noseg`` is the segment-embedding-off ablation, pretrained for its hr_acc curve only.
PRETRAINS: Dict[str, Tuple[str, Dict]] = {
    'mae': ('mae', {}), 'mixedae': ('mixedae', {}),
    'mixedae-noseg': ('mixedae', dict(use_segment_embed=False))}
METHODS = ('mae', 'mixedae', 'scratch')
TASKS = ('ade20k', 'coco')
NAMES = {'mae': 'MAE', 'mixedae': 'MixedAE', 'mixedae-noseg': 'MixedAE, no segment embeddings',
         'scratch': 'random init'}


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
    amp: bool                       # tools/train.py --amp (bf16 autocast, its default)
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
