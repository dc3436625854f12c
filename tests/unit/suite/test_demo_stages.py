"""mixedae.suite.demo.stages: what each stage runs (written configs, tool arguments) and the
determinism of one training stage."""
import dataclasses
import json
import os
import re

import pytest
import torch
from mmengine.config import Config

from support import REPO, write_scalars
from mixedae.datasets.synthetic import write_dataset
from mixedae.suite.demo.presets import PRESETS
from mixedae.suite.demo.stages import Demo
from mixedae.suite.stats import read_scalars


def test_children_get_written_configs_and_no_list_index_options(tmp_path, monkeypatch):
    """Each child runs a config file the demo wrote; no option addresses a list by position."""
    demo = Demo(REPO, str(tmp_path / 'o'), str(tmp_path / 'd'), PRESETS['cpu'])
    calls = []

    def tool(name, *args, log):
        calls.append((name, args))
        cfg = Config.fromfile(args[0])
        if name == 'train.py' and 'max_iters' in cfg.train_cfg:   # a transfer run validates
            write_scalars(os.path.join(args[args.index('--work-dir') + 1],
                                     '2026/vis_data/scalars.json'),
                        [dict(loss=1.0, step=cfg.train_cfg.max_iters),
                         dict(mIoU=12.5, aAcc=50.0, time=0.1, step=cfg.train_cfg.max_iters)])

    def ran(step, *args):
        """The tool calls of one stage."""
        before = len(calls)
        step(*args)
        return calls[before:]

    monkeypatch.setattr(demo, 'tool', tool)
    [(pretrain_tool, noseg_args)] = ran(demo.pretrain, 'mixedae-noseg', 0)
    [(coco_tool, coco_args)] = ran(demo.transfer, 'coco', 'mae', 1)
    [(probe_tool, probe_args)] = ran(demo.transfer, 'probe', 'naivemix', 2)
    [(hr_tool, hr)] = ran(demo.measure_hr_acc, 'mixedae')
    figures = ran(demo.figures)
    assert pretrain_tool == coco_tool == probe_tool == 'train.py'
    assert hr_tool == 'measure_hr_acc.py'
    assert sorted(name for name, _ in figures) == ['visualize_attention.py',
                                                   'visualize_mixing.py']
    # a transfer run's metrics: its validation at the last iteration, timing left out
    with open(demo.metrics('probe', 'naivemix', 2)) as f:
        assert json.load(f) == dict(mIoU=12.5, aAcc=50.0)
    assert ran(demo.transfer, 'probe', 'naivemix', 2) == []   # validated already: not retrained
    for name, args in calls:
        assert '--cfg-options' not in args, name
        assert not any(re.search(r'\.\d+\.', a) for a in args if '=' in a), args
        config = Config.fromfile(args[0])
        assert os.path.dirname(args[0]) == os.path.join(demo.out, 'configs')
    noseg = Config.fromfile(noseg_args[0])
    assert noseg.model.backbone.use_segment_embed is False
    coco = Config.fromfile(coco_args[0])
    assert coco.model.backbone.init_cfg.checkpoint == demo.backbone('mae', 1)
    assert coco.randomness.seed == 1 and config.model.backbone.embed_dim == 64
    probe = Config.fromfile(probe_args[0])
    assert probe.model.backbone.init_cfg.checkpoint == demo.backbone('naivemix', 2)
    assert probe.model.backbone.frozen and probe.randomness.seed == 2
    # hr_acc: every seed's untrained encoder, and the pretrained MixedAE, MAE and naive-mixing
    # encoders of every seed, in MixedAE's config
    seeds = demo.p.pretrain_seeds
    assert [hr[i + 1] for i, a in enumerate(hr) if a == '--init'] == [
        f'init_s{s}={s}' for s in seeds]
    assert [hr[i + 1] for i, a in enumerate(hr) if a == '--checkpoint'] == [
        f'{m}_s{s}={demo.pretrain_ckpt(m, s)}' for m in ('mixedae', 'mae', 'naivemix')
        for s in seeds]
    assert Config.fromfile(hr[0]).model.backbone.tied_qk_init is False
    assert hr[hr.index('--out') + 1] == demo.hr_acc_file('mixedae')


def test_random_init_is_the_step0_encoder_of_maes_run(tmp_path):
    """The random-init row starts from MAE's initialisation of that seed (sin-cos positions,
    xavier Linears), and the transfer ViT takes it whole."""
    from mixedae.models import ViT
    from mixedae.suite.step0 import step0_model
    demo = Demo(REPO, str(tmp_path / 'o'), str(tmp_path / 'd'), PRESETS['cpu'])
    demo.init_backbone(1)
    written = torch.load(demo.backbone('scratch', 1))['state_dict']
    config = os.path.join(demo.out, 'configs', 'init_s1.py')
    assert Config.fromfile(config).model.backbone.group_size == 1        # MAE's config
    start = step0_model(config, 1).backbone.state_dict()
    assert all(torch.equal(v, start[k]) for k, v in written.items())
    vit = ViT(**demo.p.arch, img_size=64)
    missing, unexpected = vit.load_state_dict(written, strict=False)
    assert not missing and not unexpected
    assert not torch.equal(written['blocks.0.attn.qkv.weight'],
                           step0_model(config, 2).backbone.state_dict()['blocks.0.attn.qkv.weight'])


@pytest.mark.slow
def test_one_training_stage_is_deterministic(tmp_path):
    """The demo's MixedAE pretraining, run twice from scratch: identical weights and logs."""
    write_dataset(str(tmp_path / 'data'), 16, 1, (64, 64), seed=0, views=('pretrain',))
    preset = dataclasses.replace(PRESETS['cpu'], pretrain_epochs=2, log_interval=1)
    runs = []
    for i in range(2):
        demo = Demo(REPO, str(tmp_path / f'out{i}'), str(tmp_path / 'data'), preset)
        demo.pretrain('mixedae', 0)
        ckpt = torch.load(demo.pretrain_ckpt('mixedae', 0), map_location='cpu',
                          weights_only=False)
        runs.append((ckpt['state_dict'], read_scalars(demo.pretrain_dir('mixedae', 0))))
    (sd0, log0), (sd1, log1) = runs
    assert sd0.keys() == sd1.keys()
    for k in sd0:
        torch.testing.assert_close(sd0[k], sd1[k], rtol=0, atol=0, msg=k)
    keys = ('loss', 'loss_rec', 'loss_hc', 'hr_acc')
    assert len(log0) == 2 and [{k: r[k] for k in keys} for r in log0] == \
        [{k: r[k] for k in keys} for r in log1]
