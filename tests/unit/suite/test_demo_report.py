"""mixedae.suite.demo.report: the report of a (faked) demo run, its intervals, hr_acc table,
pretraining table and figures, and its publication into docs/."""
import json
import os

import numpy as np

from support import REPO, write_scalars
from mixedae.suite.demo.presets import HOMOLOGOUS, PRESETS, PRETRAINS
from mixedae.suite.demo.report import publish_report, seed_values, write_report
from mixedae.suite.demo.stages import Demo


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
            write_scalars(os.path.join(demo.pretrain_dir(name, seed),
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
