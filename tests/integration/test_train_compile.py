"""tools/train.py --compile (MMEngine's compile=True) on the tiny MixedAE config, on CPU with the
top-K kernel forced (``attn_impl='triton'``, Triton's interpreter): its custom ops are in the
graphs inductor compiles, and the logged losses are the eager run's."""
import glob
import json
import os
import shutil

import pytest

from support import REPO, inductor_recording_graphs, load_tool

TINY_CFG = REPO.config('mixedae-tiny')
LOGGED = ('loss', 'loss_rec', 'loss_hc', 'hr_acc')
FWD, BWD = 'mixedae.topk_attention_fwd.default', 'mixedae.topk_attention_bwd.default'


def logged_losses(work_dir):
    path, = glob.glob(os.path.join(work_dir, '*', 'vis_data', 'scalars.json'))
    with open(path) as f:
        return [{k: r[k] for k in LOGGED} for r in map(json.loads, f)]


@pytest.mark.slow
def test_compiled_training_logs_the_eager_losses(tmp_path, images):
    train = load_tool('train')
    # 16 of the images, one batch per epoch: two steps per run, each running the kernel in
    # Triton's interpreter (most of the test's time)
    batch = tmp_path / 'batch'
    batch.mkdir()
    for path in sorted(images.iterdir())[:16]:
        shutil.copy(path, batch)
    runs = {}
    # inductor's graph caches off, its random numbers torch's (the mixing assignment must be the
    # eager one for the losses to compare); the graphs it compiles are recorded
    with inductor_recording_graphs() as graphs:
        for name, flags in (('eager', []), ('compiled', ['--compile'])):
            work_dir = str(tmp_path / name)
            assert train.main([TINY_CFG, '--work-dir', work_dir, *flags, '--cfg-options',
                               f'train_dataloader.dataset.data_root={batch}',
                               'model.backbone.attn_impl=triton',
                               'train_cfg.max_epochs=2', f'experiment_name={name}']) == 0
            runs[name] = logged_losses(work_dir)
    assert any(FWD in ops for ops in graphs) and any(BWD in ops for ops in graphs)
    assert len(runs['eager']) == 2                          # 2 epochs of 1 batch of 16
    for eager, compiled in zip(runs['eager'], runs['compiled']):
        for key in LOGGED:
            assert compiled[key] == pytest.approx(eager[key], rel=1e-4, abs=1e-6), key
