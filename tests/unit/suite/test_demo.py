"""The demo's building blocks: log reading, spreads over seeds, the report, the presets'
configs, progress lines, and the determinism of one training stage."""
import dataclasses
import json
import os
import re

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from support import ROOT, load_tool
from mixedae.datasets.synthetic import render_scene, write_dataset
from mixedae.suite.demo.presets import HOMOLOGOUS, PRESETS, PRETRAINS, TRANSFERS, out_indices
from mixedae.engine.optimizers.amp_optim_wrapper import AUTOCAST_LOG
from mixedae.suite.demo.hr_tables import amp_line
from mixedae.suite.demo.plan import plan
from mixedae.suite.demo.report import publish_report, seed_values, write_report
from mixedae.suite.demo.run_configs import (entry_of_type, finetune_config, pretrain_config,
                                            probe_config)
from mixedae.suite.demo.runner import progress_line
from mixedae.suite.demo.schedule import Stage, batches, eta, read_timings, run_stages
from mixedae.suite.demo.stages import Demo
from mixedae.suite.repo import Repo
from mixedae.suite.stats import read_scalars, read_validation, steady_time_per_iter

REPO = Repo(ROOT)


def write_lines(path, records):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.writelines(json.dumps(r) + '\n' for r in records)


def test_read_scalars_merges_resumed_runs_and_skips_validation(tmp_path):
    write_lines(str(tmp_path / '20260101_000000/vis_data/scalars.json'),
                [dict(loss=1.0, time=9.0, step=10), dict(loss=0.9, time=0.5, step=20),
                 dict(loss=0.8, time=0.7, step=30)])
    # resumed after step 20: step 30 is logged again, then 40; one validation record
    write_lines(str(tmp_path / '20260101_010000/vis_data/scalars.json'),
                [dict(loss=0.7, time=8.0, step=30), dict(loss=0.6, time=0.6, step=40),
                 dict(mIoU=50.0, step=40)])
    records = read_scalars(str(tmp_path))
    assert [(r['step'], r['loss']) for r in records] == [(10, 1.0), (20, 0.9), (30, 0.7),
                                                         (40, 0.6)]
    assert steady_time_per_iter(records) == 0.6          # median of 0.5, 8.0, 0.6
    assert steady_time_per_iter(records[:1]) is None


def test_read_validation_takes_the_latest_record_of_a_step(tmp_path):
    write_lines(str(tmp_path / '20260101_000000/vis_data/scalars.json'),
                [dict(loss=1.0, step=10), dict(mIoU=20.0, time=0.1, data_time=0.0, step=10)])
    write_lines(str(tmp_path / '20260101_010000/vis_data/scalars.json'),   # a rerun's
                [dict(loss=0.5, step=10), dict(mIoU=21.0, aAcc=60.0, time=0.2, step=10)])
    assert read_validation(str(tmp_path), 10) == dict(mIoU=21.0, aAcc=60.0)
    assert read_validation(str(tmp_path), 5) is None


def test_read_scalars_names_bad_file(tmp_path):
    path = tmp_path / 'x/vis_data/scalars.json'
    os.makedirs(path.parent)
    path.write_text('{"loss": 1, "step": 1}\nnot json\n')
    with pytest.raises(ValueError, match=r'scalars.json:2: not a JSON record'):
        read_scalars(str(tmp_path))


def test_progress_line_condenses_mmengine_lines():
    line = ('11/26 13:10:00 - mmengine - INFO - Epoch(train)  [3][20/37]  base_lr: 1.0e-03 '
            'lr: 1.0e-03  eta: 0:01:23  time: 0.0312  data_time: 0.0020  memory: 0  '
            'loss: 0.9123  loss_rec: 0.8000  loss_hc: 0.1123  hr_acc: 0.4100')
    assert progress_line(line) == ('Epoch [3][20/37] eta 0:01:23 loss 0.9123 loss_rec 0.8000 '
                                   'loss_hc 0.1123 hr_acc 0.4100')
    it = ('11/26 13:10:00 - mmengine - INFO - Iter(train) [ 50/300]  base_lr: 5.0e-04 lr: '
          '5.0e-04  eta: 0:00:40  time: 0.16  data_time: 0.01  memory: 0  loss: 2.5  '
          'decode.loss_ce: 1.5  decode.acc_seg: 60.0  aux.loss_ce: 1.0')
    assert progress_line(it) == ('Iter [50/300] eta 0:00:40 loss 2.5 decode.loss_ce 1.5 '
                                 'aux.loss_ce 1.0')
    assert progress_line('11/26 13:10:00 - mmengine - INFO - Saving checkpoint at 3 epochs') \
        is None


def test_out_indices():
    assert out_indices(4) == [0, 1, 2, 3]
    assert out_indices(12) == [2, 5, 8, 11]


def test_entry_of_type_finds_one_entry_by_type_name():
    entries = [dict(type='LinearLR'), dict(type='mmseg.Feature2Pyramid'), dict(type='FPN')]
    assert entry_of_type(entries, 'Feature2Pyramid') is entries[1]
    assert entry_of_type(entries, 'FPN') is entries[2]
    with pytest.raises(KeyError, match="one 'MultiStepLR' entry, found 0"):
        entry_of_type(entries, 'MultiStepLR')
    with pytest.raises(KeyError, match="found 2"):
        entry_of_type(entries + [dict(type='FPN')], 'FPN')


def _roundtrip(cfg, tmp_path, name):
    """The config as a child process reads it: written by the demo, parsed again."""
    demo = Demo(REPO, str(tmp_path / 'fresh_out'), str(tmp_path / 'data'), PRESETS['cpu'])
    path = demo.write_config(cfg, name)
    assert path == str(tmp_path / 'fresh_out' / 'configs' / f'{name}.py')
    return Config.fromfile(path)


@pytest.mark.parametrize('preset', sorted(PRESETS))
def test_preset_pretraining_configs_build_and_run(preset, tmp_path):
    from mixedae.registry import MODELS
    p = PRESETS[preset]
    for key in PRETRAINS:
        cfg = _roundtrip(pretrain_config(REPO, p, key, str(tmp_path), seed=3), tmp_path, key)
        assert cfg.model.backbone.img_size == p.pretrain_size
        assert cfg.model.backbone.embed_dim == p.arch['embed_dim']
        assert cfg.train_dataloader.dataset.pipeline[1] == dict(
            type='RandomResizedCrop', size=p.pretrain_size, scale=(0.2, 1.0),
            interpolation='bicubic')
        assert cfg.train_dataloader.dataset.data_root == f'{tmp_path}/pretrain'
        assert cfg.train_dataloader.batch_size == p.pretrain_batch
        assert p.pretrain_batch % cfg.model.backbone.group_size == 0
        assert cfg.randomness == dict(seed=3, diff_rank_seed=True,
                                      deterministic=p.deterministic)
        with DefaultScope.overwrite_default_scope('mixedae'):
            model = MODELS.build(cfg.model)
        s = p.pretrain_size
        losses = model.loss(torch.randn(4, 3, s, s))
        assert torch.isfinite(losses['loss_rec'])
        assert ('hr_acc' in losses) == (key in HOMOLOGOUS)
        assert ('loss_hc' in losses) == (key in HOMOLOGOUS)
        # one knob between neighbours: MixedAE starts from MAE's initialisation, only the
        # variant ties q and k; naive mixing has neither top-K nor segment embeddings
        b = cfg.model.backbone
        assert b.get('tied_qk_init', False) == (key == 'mixedae-tied')
        assert (b.group_size == 1) == (key == 'mae')         # no mixing: no segments
        if key != 'mae':
            assert b.use_segment_embed == (key in ('mixedae', 'mixedae-tied'))
            assert (b.attn_mode == 'vanilla') == (key == 'naivemix')


@pytest.mark.parametrize('preset', sorted(PRESETS))
def test_preset_finetuning_configs_build_and_run(preset, tmp_path):
    p = PRESETS[preset]
    d = p.arch['embed_dim']
    ade = _roundtrip(finetune_config(REPO, p, 'ade20k', str(tmp_path), 1, None), tmp_path, 'a')
    assert 'init_cfg' not in ade.model.backbone or ade.model.backbone.init_cfg is None
    assert ade.model.decode_head.in_channels == [d] * 4
    assert ade.train_dataloader.batch_size == p.finetune_batch['ade20k']
    assert ade.train_cfg.max_iters == p.finetune_iters['ade20k']
    import mmseg.models  # noqa: F401  (registers the segmentors)
    from mmseg.registry import MODELS as SEG
    with DefaultScope.overwrite_default_scope('mmseg'):
        seg = SEG.build(ade.model).eval()
    with torch.no_grad():
        logits = seg(torch.randn(1, 3, 64, 64), mode='tensor')
    assert logits.shape[:2] == (1, ade.model.decode_head.num_classes)

    probe = _roundtrip(probe_config(REPO, p, str(tmp_path), 2, 'e.pth'), tmp_path, 'p')
    assert probe.model.backbone.init_cfg == dict(type='Pretrained', checkpoint='e.pth')
    assert probe.model.backbone.frozen is True and probe.model.neck is None
    assert list(probe.model.backbone.out_indices) == [p.arch['depth'] - 1]
    assert probe.model.decode_head.in_channels == probe.model.decode_head.channels == d
    assert probe.train_cfg.max_iters == p.probe_iters and probe.randomness.seed == 2
    assert probe.train_dataloader.batch_size == p.probe_batch
    assert probe.val_dataloader.dataset.data_root == f'{tmp_path}/ade'
    probe.model.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope('mmseg'):
        linear = SEG.build(probe.model).eval()
    with torch.no_grad():
        logits = linear(torch.randn(1, 3, 64, 64), mode='tensor')
    assert logits.shape[:2] == (1, probe.model.decode_head.num_classes)

    coco = _roundtrip(finetune_config(REPO, p, 'coco', str(tmp_path), 1, 'b.pth'), tmp_path, 'c')
    assert coco.model.backbone.init_cfg == dict(type='Pretrained', checkpoint='b.pth')
    assert coco.model.neck[1].in_channels == [d] * 4
    assert coco.param_scheduler[1].milestones == [int(p.finetune_iters['coco'] * 0.75)]
    assert coco.val_evaluator.ann_file.endswith('coco/annotations/instances_val2017.json')
    import mmdet.models  # noqa: F401
    from mmdet.registry import MODELS as DET
    assert [loader.dataset.data_root for loader in (
        coco.train_dataloader, coco.val_dataloader, coco.test_dataloader)] == [
        f'{tmp_path}/coco/'] * 3
    coco.model.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope('mmdet'):
        det = DET.build(coco.model).eval()
    with torch.no_grad():
        feats = det.extract_feat(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == [coco.model.neck[1].out_channels] * 5


def test_scenes_carry_their_own_identity():
    """Patches of one scene are told from those of others by their colour statistics alone:
    the nearest neighbour of a patch comes from its own scene far more often than chance."""
    rng = np.random.default_rng(0)
    feats, owner = [], []
    for i in range(8):
        image, _ = render_scene(rng, 64, 64)
        patches = image.reshape(8, 8, 8, 8, 3).transpose(0, 2, 1, 3, 4).reshape(64, 64, 3)
        feats.append(np.concatenate([patches.mean(1), patches.std(1)], 1))   # 64 x 6
        owner += [i] * 64
    feats, owner = np.concatenate(feats), np.array(owner)
    dist = np.linalg.norm(feats[:, None] - feats[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    accuracy = (owner[dist.argmin(1)] == owner).mean()
    assert accuracy > 0.8                               # chance: 63 / 511 ~ 0.12


def _fake_run(demo, values, hr):
    """Metrics of every (task, method, seed), scalars of the pretraining runs (``hr``: the last
    logged hr_acc of the homologous ones), the hr_acc files, figures."""
    for (task, method, seed), metrics in values.items():
        path = demo.metrics(task, method, seed)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            json.dump(metrics, f)
    for name in PRETRAINS:
        for seed in demo.p.pretrain_seeds:
            last = hr.get(name, [None] * 3)[seed]
            recs = [dict(loss=1.0 / s, loss_rec=0.9 / s, time=0.05 if name == 'mae' else 0.06,
                         step=37 * s, **({'hr_acc': last * s / 3, 'loss_hc': 0.3 / s}
                                         if last is not None else {})) for s in (1, 2, 3)]
            write_lines(os.path.join(demo.pretrain_dir(name, seed),
                                     '2026/vis_data/scalars.json'), recs)
    for name in HOMOLOGOUS:
        measured = {'_chance': 15 / 63}
        for seed in demo.p.pretrain_seeds:
            measured[f'init_s{seed}'] = dict(hr_acc=0.20 + seed / 100)
            measured[f'{name}_s{seed}'] = dict(hr_acc=[0.40, 0.46, 0.45][seed])
            if name == 'mixedae':
                measured[f'mae_s{seed}'] = dict(hr_acc=0.3)
                measured[f'naivemix_s{seed}'] = dict(hr_acc=0.25)
        os.makedirs(os.path.dirname(demo.hr_acc_file(name)), exist_ok=True)
        with open(demo.hr_acc_file(name), 'w') as f:
            json.dump(measured, f)
    import cv2
    for fig in ('attention', 'mixing'):
        cv2.imwrite(os.path.join(demo.out, f'{fig}.png'), np.zeros((8, 8, 3), np.uint8))


def _rows(md: str, heading: str) -> dict:
    """First cell -> table line, in the first table after ``heading``."""
    section = md.split(heading + '\n', 1)[1].split('\n## ', 1)[0]
    table = section.split('\n\n| ', 1)[1].split('\n\n', 1)[0]
    return {line.split(' | ')[0].lstrip('| '): line for line in ('| ' + table).splitlines()}


def test_report_shows_probe_intervals_hr_acc_references_and_figures(tmp_path):
    demo = Demo(REPO, str(tmp_path / 'out'), str(tmp_path / 'data'), PRESETS['cpu'])
    os.makedirs(demo.out)
    values = {}
    for seed in (0, 1, 2):
        values[('probe', 'mae', seed)] = {'mIoU': 40.0 + seed}
        values[('probe', 'mixedae', seed)] = {'mIoU': 50.0 + seed}      # clearly above
        values[('probe', 'naivemix', seed)] = {'mIoU': [39.0, 42.0, 41.0][seed]}  # overlaps
        values[('probe', 'scratch', seed)] = {'mIoU': 20.0 + seed}
    values[('ade20k', 'mae', 0)] = {'mIoU': 60.0}
    values[('ade20k', 'scratch', 0)] = {'mIoU': 61.5}
    _fake_run(demo, values, hr={'mixedae': [0.45, 0.35, 0.40]})
    timings = {'pretrain mae s0': 50.0, 'pretrain mixedae s0': 61.0}
    write_report(demo, seed_values(demo), timings)
    md = open(os.path.join(demo.out, 'report.md')).read()
    rows = _rows(md, '## Transfer')
    # the probe first: mean ± std (values), then differences with their Welch intervals
    assert rows['MAE'] == ('| MAE | 41.00 ± 1.00 (40.00, 41.00, 42.00) | – | **+20.00 [+17.73, '
                           '+22.27]** | 60.00 |')
    assert '| **+10.00 [+' in rows['MixedAE']            # interval excludes 0: called real
    naive = rows['naive mixing'].split(' | ')
    assert naive[2].startswith('-0.33 [') and not naive[2].startswith('**')
    assert rows['MixedAE, tied q/k start (variant)'].startswith(
        '| MixedAE, tied q/k start (variant) | missing |')
    # fine-tuning beside it, one seed: no interval claimed
    assert rows['random init'].endswith('| 61.50 |')
    # hr_acc: untrained, pretrained, the difference, the logged value, the other encoders, chance
    # (paired by seed: differences 0.20, 0.25, 0.23, as in test_stats' hand-computed case)
    assert [_rows(md, '## Homologous recognition')['MixedAE']] == [
        '| MixedAE | 0.210 ± 0.010 (0.200, 0.210, 0.220) | 0.437 ± 0.032 '
        '(0.400, 0.460, 0.450) | **+0.227 [+0.164, +0.289]** | 0.400 ± 0.050 '
        '(0.450, 0.350, 0.400) |']
    # one rule decides bold for the whole report, stated once with its family size: MixedAE,
    # naive mixing and random init against MAE and random init (6 probe differences; the tied
    # start and no-seg have no probe here) and the paired hr_acc rows of the 3 top-K methods
    assert md.count("Holm's step-down correction at 5 % over its 9 comparisons") == 1
    assert "| MAE (in MixedAE's mixing) | – | 0.300 ± 0.000 (0.300, 0.300, 0.300) |" in md
    assert '| chance | 0.238 | 0.238 |' in md and 'Chance (keys drawn at random): 0.238' in md
    # the pretraining table: every run, logged finals, ratio to MAE of the same seed, wall time
    assert '| MixedAE | 0 | 111 | 0.300 | 0.450 | 60 | 1.20 | 61 |' in md
    assert '| MAE | 0 | 111 | 0.300 | – | 50 | 1.00 | 50 |' in md
    assert '| naive mixing | 2 | 111 | 0.300 | – | 60 | 1.20 | n/a |' in md
    assert 'fp32 (no autocast)' in md and 'What it cannot show' in md
    for fig in ('curves.png', 'report.png', 'attention.png', 'mixing.png'):
        assert f']({fig})' in md
        assert os.path.getsize(os.path.join(demo.out, fig)) > 0

    docs = tmp_path / 'docs'
    assert publish_report(demo.out, str(docs)) == str(docs / 'demo_report.md')
    text = (docs / 'demo_report.md').read_text()
    assert '](demo_curves.png)' in text and '](curves.png)' not in text
    assert sorted(os.listdir(docs)) == [
        'demo_attention.png', 'demo_curves.png', 'demo_mixing.png', 'demo_report.md',
        'demo_report.png']


def test_report_says_what_autocast_the_runs_logged(tmp_path):
    demo = Demo(REPO, str(tmp_path / 'out'), str(tmp_path / 'data'), PRESETS['gpu'])
    assert amp_line(demo) == 'autocast requested (--amp) but no run logged its state'
    os.makedirs(os.path.dirname(demo.log('pretrain_mae_s0')))
    with open(demo.log('pretrain_mae_s0'), 'w') as f:
        f.write(f'12/06 - mmengine - INFO - {AUTOCAST_LOG} bfloat16 autocast on cuda\n')
    assert amp_line(demo) == "measured in the runs' first step: bfloat16 autocast on cuda"


def test_children_get_written_configs_and_no_list_index_options(tmp_path, monkeypatch):
    """Each child runs a config file the demo wrote; no option addresses a list by position."""
    demo = Demo(REPO, str(tmp_path / 'o'), str(tmp_path / 'd'), PRESETS['cpu'])
    calls = []

    def tool(name, *args, log):
        calls.append((name, args))
        cfg = Config.fromfile(args[0])
        if name == 'train.py' and 'max_iters' in cfg.train_cfg:   # a transfer run validates
            write_lines(os.path.join(args[args.index('--work-dir') + 1],
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


def test_schedule_reuses_finished_stages_and_records_timings(tmp_path, capsys):
    ran = []

    def stage(name, kind, exists):
        out = tmp_path / f'{name}.out'
        if exists:
            out.write_text('')
        return Stage(name, kind, [str(out)], lambda: (ran.append(name), out.write_text('')))

    stages = [stage('a', 'pretrain', True), stage('b', 'pretrain', False),
              stage('report', 'report', True)]
    timings_file = str(tmp_path / 'run' / 'timings.json')
    timings = run_stages(stages, {'pretrain': 60, 'report': 5}, timings_file)
    assert ran == ['b', 'report']                  # 'a' reused; the report always runs
    assert set(timings) == {'b'} and read_timings(timings_file) == timings
    printed = capsys.readouterr().out
    assert '[1/3] a' in printed and 'reused (outputs exist)' in printed
    # ETA: nothing measured yet -> the expected seconds of the stages not yet done
    stages.append(stage('c', 'probe', False))
    expected = {'pretrain': 60, 'probe': 15, 'report': 5}
    assert eta(stages, expected, {}) == 5 + 15
    (tmp_path / 'b.out').unlink()
    assert eta(stages, expected, {}) == 60 + 5 + 15
    # a kind measured in this run counts its mean time; the others their expected time times
    # the pace so far (here 200 s spent where 120 s were expected)
    measured = {'pretrain': [90.0, 110.0]}
    assert eta(stages, expected, measured) == pytest.approx(100 + (5 + 15) * 200 / 120)


def test_consecutive_training_stages_of_one_kind_run_side_by_side(tmp_path):
    import threading
    barrier, ran = threading.Barrier(2, timeout=10), []

    def stage(name, kind):
        def run():
            if name in ('a', 'b'):
                barrier.wait()              # both probes of a batch must be running at once
            ran.append(name)
            (tmp_path / name).write_text('')
        return Stage(name, kind, [str(tmp_path / name)], run)

    stages = [stage('p0', 'pretrain'), stage('c0', 'convert'), stage('c1', 'convert'),
              stage('a', 'probe'), stage('b', 'probe'), stage('c', 'probe'),
              stage('report', 'report')]
    assert [[s.name for s in b] for b in batches(stages, 2)] == [
        ['p0'], ['c0'], ['c1'], ['a', 'b'], ['c'], ['report']]
    assert [[s.name for s in b] for b in batches(stages, 1)] == [[s.name] for s in stages]
    timings = run_stages(stages, {}, str(tmp_path / 'timings.json'), parallel=2)
    assert sorted(ran) == sorted(s.name for s in stages) and set(timings) == {
        'p0', 'c0', 'c1', 'a', 'b', 'c'}
    # side by side, a stage of a parallel kind counts for 1 / parallel of the ETA
    (tmp_path / 'c').unlink()
    assert eta(stages, {'probe': 10}, {}, parallel=2) == 5.0
    assert eta(stages, {'probe': 10}, {'probe': [4.0]}, parallel=2) == 2.0


def test_stage_list_covers_every_method_task_and_seed(tmp_path):
    p = PRESETS['gpu']
    seeds = p.pretrain_seeds
    demo = Demo(REPO, str(tmp_path / 'o'), str(tmp_path / 'd'), p)
    names = [s.name for s in plan(demo, report=lambda: None)]
    assert [n for n in names if n.startswith('pretrain')] == [
        f'pretrain {m} s{s}' for s in p.pretrain_seeds for m in PRETRAINS]
    assert len(p.pretrain_seeds) >= 3 and len(PRETRAINS) == 5
    assert [n for n in names if n.startswith('convert')] == [
        f'convert {m} s{s}' for s in p.pretrain_seeds for m in PRETRAINS]
    assert [n for n in names if n.startswith('hr_acc')] == [f'hr_acc {m}' for m in HOMOLOGOUS]
    probes = [n for n in names if n.startswith('probe')]
    assert probes == [f'probe {m} s{s}' for s in p.pretrain_seeds for m in TRANSFERS]
    tuned = [n for n in names if n.startswith(('ade20k', 'coco'))]
    assert tuned == [f'{t} {m} s{s}' for t in ('ade20k', 'coco') for s in p.finetune_seeds
                     for m in TRANSFERS]
    assert names[-2:] == ['figures', 'report']
    assert demo.backbone('mae', 0).endswith('backbones/mae_s0.pth')
    assert demo.backbone('scratch', 0) is None
    # every pretraining ends before the stages that read it
    assert max(names.index(f'convert {m} s{s}') for s in p.pretrain_seeds
               for m in PRETRAINS) < names.index('hr_acc mixedae') < names.index(probes[0])
    # the stages run what their names say
    calls = []
    demo.pretrain = lambda name, seed: calls.append(('pretrain', name, seed))
    demo.transfer = lambda task, name, seed: calls.append((task, name, seed))
    for stage in plan(demo, report=lambda: None):
        if stage.kind in ('pretrain', 'probe', 'coco'):
            stage.run()
    assert calls[:2] == [('pretrain', 'mae', 0), ('pretrain', 'naivemix', 0)]
    assert names.index('convert mae s0') > names.index(f'pretrain mixedae-noseg s{seeds[-1]}')
    assert ('probe', 'scratch', 2) in calls and ('coco', 'mixedae-tied', 0) in calls
    assert ('coco', 'mae', 1) not in calls and len(calls) == 15 + 18 + 6
    # the CPU preset fine-tunes on ADE20K only, from the first pretraining seed
    cpu = [s.name for s in plan(Demo(REPO, str(tmp_path / 'c'), str(tmp_path / 'd'),
                                     PRESETS['cpu']), report=lambda: None)]
    assert [n for n in cpu if n.startswith(('ade20k', 'coco'))] == [
        f'ade20k {m} s0' for m in TRANSFERS]


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


@pytest.mark.parametrize('cuda', [False, True])
def test_gpu_preset_warns_when_no_gpu_is_visible(cuda, monkeypatch, capsys, tmp_path):
    demo_tool = load_tool('demo')
    ran = []
    monkeypatch.setattr(demo_tool, 'run_demo', lambda *args: ran.append(args) or 'r.md')
    monkeypatch.setattr(demo_tool.torch.cuda, 'is_available', lambda: cuda)
    assert demo_tool.main(['--preset', 'gpu', '--out', str(tmp_path)]) == 0
    err = capsys.readouterr().err
    warned = "warning: preset 'gpu' is sized for a GPU and none is visible" in err
    assert warned == (not cuda) and len(ran) == 1
    demo_tool.main(['--out', str(tmp_path)])                 # the CPU preset never warns
    assert 'warning' not in capsys.readouterr().err
