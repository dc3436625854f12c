"""The demo's stages in order: generate data -> pretrain every method of
:data:`~.presets.PRETRAINS` over the preset's seeds (same budget) -> convert each encoder ->
write each seed's step-0 encoder (random init: where MAE's run started) -> hr_acc of the
untrained and pretrained encoders -> linear probe (frozen encoder) of every encoder and of
random init -> fine-tune UperNet (and Mask R-CNN on the GPU preset) from every encoder -> figures
-> report. A stage whose outputs exist is reused.
"""
from __future__ import annotations

import os.path as osp
from typing import Callable, List

from mixedae.datasets.synthetic import MANIFEST
from .presets import HOMOLOGOUS, PRETRAINS, TRANSFERS
from .schedule import Stage
from .stages import Demo


def plan(demo: Demo, report: Callable[[], None]) -> List[Stage]:
    """Every stage of ``demo`` in order; ``report`` writes the report (the last stage)."""
    p = demo.p
    stages = [Stage('generate data', 'data', [osp.join(demo.data, MANIFEST)],
                    demo.generate_data, demo.data_current)]
    pretrained = [(name, seed) for seed in p.pretrain_seeds for name in PRETRAINS]
    stages += [Stage(f'pretrain {n} s{s}', 'pretrain', [demo.pretrain_ckpt(n, s)],
                     lambda n=n, s=s: demo.pretrain(n, s)) for n, s in pretrained]
    stages += [Stage(f'convert {n} s{s}', 'convert', [demo.backbone(n, s)],
                     lambda n=n, s=s: demo.convert(n, s)) for n, s in pretrained]
    stages += [Stage(f'init s{s}', 'init', [demo.backbone('scratch', s)],
                     lambda s=s: demo.init_backbone(s)) for s in p.pretrain_seeds]
    stages += [Stage(f'hr_acc {name}', 'hr_acc', [demo.hr_acc_file(name)],
                     lambda n=name: demo.measure_hr_acc(n)) for name in HOMOLOGOUS]
    runs = [('probe', m, s) for s in p.pretrain_seeds for m in TRANSFERS]
    runs += [(t, m, s) for t in p.finetune_tasks for s in p.pretrain_seeds for m in TRANSFERS]
    stages += [Stage(f'{t} {m} s{s}', t, [demo.metrics(t, m, s)],
                     lambda t=t, m=m, s=s: demo.transfer(t, m, s)) for t, m, s in runs]
    stages.append(Stage('figures', 'figures', [osp.join(demo.out, 'attention.png'),
                                               osp.join(demo.out, 'mixing.png')],
                        demo.figures))
    stages.append(Stage('report', 'report', [osp.join(demo.out, 'report.md')], report))
    return stages
