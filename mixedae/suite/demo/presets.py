"""The demo's methods and scales (presets)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Dict, List, Tuple

#: pretrained methods, each one knob from its neighbour: name -> (config kind, backbone fields,
#: model fields) set on top of the tiny config and the preset's sizes. ``mixedae`` starts from
#: MAE's initialisation, as the ViT-B configs do; ``mixedae-tied`` is this project's variant
#: whose homologous layers start with keys equal to queries (docs/method.md).
PRETRAINS: Dict[str, Tuple[str, Dict, Dict]] = {
    'mae': ('mae', {}, {}),
    'naivemix': ('mixedae', dict(attn_mode='vanilla', use_segment_embed=False,
                                 tied_qk_init=False), dict(contrast_weight=0.0)),
    'mixedae': ('mixedae', dict(tied_qk_init=False), {}),
    'mixedae-tied': ('mixedae', dict(tied_qk_init=True), {}),
    'mixedae-noseg': ('mixedae', dict(tied_qk_init=False, use_segment_embed=False), {}),
}
#: the initialisations of the transfer rows: every pretrained method and random init
TRANSFERS = tuple(PRETRAINS) + ('scratch',)
#: pretrained methods with top-K homologous attention (they log hr_acc)
HOMOLOGOUS = ('mixedae', 'mixedae-tied', 'mixedae-noseg')
NAMES = {'mae': 'MAE', 'naivemix': 'naive mixing', 'mixedae': 'MixedAE',
         'mixedae-tied': 'MixedAE, tied q/k start (variant)',
         'mixedae-noseg': 'MixedAE, no segment embeddings', 'scratch': 'random init'}


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
    pretrain_seeds: Tuple[int, ...]  # every pretrained method runs once per seed; each transfer
                                     # run (probe, fine-tuning) of its encoder uses the same seed
    probe_iters: int                # linear probe (frozen encoder), ADE20K format
    probe_batch: int
    finetune_tasks: Tuple[str, ...]  # full fine-tuning: 'ade20k' (UperNet), 'coco' (Mask R-CNN)
    finetune_iters: Dict[str, int]
    finetune_batch: Dict[str, int]
    hr_images: int                  # validation scenes hr_acc is measured on
    amp: bool                       # tools/train.py --amp (bf16 autocast, its default)
    device: str                     # 'cpu' or 'cuda': what the preset is sized for
    threads: int                    # OMP / MKL threads of every child process
    deterministic: bool             # torch deterministic algorithms (CPU: all ops have them)
    workers: int                    # dataloader workers of the pretraining
    parallel: int                   # training runs of one kind side by side (see schedule)
    log_interval: int               # iterations per MMEngine log record (curves, timing)
    expected_s: Dict[str, float] = field(default_factory=dict)  # per stage kind, for the ETA

    def describe(self) -> str:
        a = self.arch
        heads = f'{a["num_heads"]} head{"s" if a["num_heads"] > 1 else ""}'
        tuned = ' and '.join(f'{self.finetune_iters[t]} iterations of '
                             f'{"UperNet" if t == "ade20k" else "Mask R-CNN (FPN protocol)"}'
                             for t in self.finetune_tasks)
        tuned = (f'{tuned}, from the encoder of every pretraining run' if tuned
                 else 'none in this preset')
        return (f'ViT ({a["depth"]} blocks, {a["embed_dim"]}-d, {heads}, '
                f'{a["patch_size"]}x{a["patch_size"]} patches); {self.num_train} train / '
                f'{self.num_val} val generated scenes of {self.scene_size}x{self.scene_size} px '
                f'with 5 object classes. Pretraining: {self.pretrain_epochs} epochs at '
                f'{self.pretrain_size} px, batch {self.pretrain_batch}, G = 4 for the mixing '
                f'methods, seeds {", ".join(map(str, self.pretrain_seeds))} for every method. '
                f'Linear probe: {self.probe_iters} iterations on the frozen encoder of every '
                f'run. Fine-tuning: {tuned}')


PRESETS = {
    'cpu': Preset(
        name='cpu', num_train=600, num_val=100, scene_size=64, pretrain_size=64,
        arch=dict(patch_size=8, embed_dim=64, depth=4, num_heads=1),
        decoder=dict(decoder_embed_dim=32, depth=2, num_heads=4),
        pretrain_epochs=12, pretrain_batch=16, pretrain_lr=1e-3, pretrain_seeds=(0, 1, 2),
        probe_iters=300, probe_batch=8, finetune_tasks=('ade20k',),
        finetune_iters=dict(ade20k=300, coco=300), finetune_batch=dict(ade20k=4, coco=2),
        hr_images=64, amp=False, device='cpu', threads=1, deterministic=True, workers=0,
        parallel=2, log_interval=37,
        # measured on a 2-core CPU (2026-12-07), two runs side by side; coco: not run
        expected_s=dict(data=7, pretrain=23, convert=1, init=1, probe=12, ade20k=20, coco=80,
                        hr_acc=4, figures=8, report=5)),
    'gpu': Preset(
        name='gpu', num_train=4000, num_val=500, scene_size=64, pretrain_size=64,
        arch=dict(patch_size=8, embed_dim=384, depth=12, num_heads=6),
        decoder=dict(decoder_embed_dim=256, depth=4, num_heads=8),
        pretrain_epochs=20, pretrain_batch=256, pretrain_lr=1.5e-4 * 10,
        pretrain_seeds=(0, 1, 2), probe_iters=300, probe_batch=32,
        finetune_tasks=('ade20k', 'coco'),
        finetune_iters=dict(ade20k=300, coco=300), finetune_batch=dict(ade20k=16, coco=8),
        hr_images=256, amp=True, device='cuda', threads=2, deterministic=False, workers=3,
        parallel=4, log_interval=15,
        # not measured on a GPU: guesses from the one H100 attempt (0.19 s / iteration)
        expected_s=dict(data=60, pretrain=60, convert=2, init=1, probe=25, ade20k=45, coco=60,
                        hr_acc=15, figures=15, report=5)),
}
#: the GPU preset cut to fit one GPU window after the checks (tools/gpu_window.sh,
#: docs/benchmarks.md): the same data, model, pretraining (every method, seeds 0-2) and linear
#: probe, without the fine-tuning runs (gpu_check trains UperNet and Mask R-CNN itself), five
#: training runs side by side (one seed's methods at once). Chosen here; not measured on a GPU:
#: its ETA uses the GPU preset's guesses.
PRESETS['gpu-window'] = replace(PRESETS['gpu'], name='gpu-window', finetune_tasks=(), parallel=5)
#: the window's CPU rehearsal (``tools/gpu_window.sh --allow-cpu``): every stage of the window's
#: demo at the smallest scale that still gives two seeds per method (minutes on 2 cores)
PRESETS['cpu-rehearsal'] = replace(
    PRESETS['cpu'], name='cpu-rehearsal', num_train=64, num_val=16, pretrain_epochs=2,
    pretrain_seeds=(0, 1), probe_iters=10, finetune_tasks=(), hr_images=8, log_interval=2,
    expected_s=dict(PRESETS['cpu'].expected_s, data=2, pretrain=8, probe=8, hr_acc=6,
                    figures=12))


def out_indices(depth: int) -> List[int]:
    """Four evenly spaced blocks, the last one included (UperNet / FPN inputs)."""
    return [depth * k // 4 - 1 for k in range(1, 5)]
