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
            init, final = 0.20 + seed / 100, [0.40, 0.46, 0.45][seed]
            measured[f'init_s{seed}'] = dict(hr_acc=init, per_layer=[init - 0.1, init + 0.1])
            measured[f'{name}_s{seed}'] = dict(hr_acc=final, per_layer=[final, final])
            if name == 'mixedae':
                measured[f'mae_s{seed}'] = dict(hr_acc=0.3, per_layer=[0.2, 0.4])
                measured[f'naivemix_s{seed}'] = dict(hr_acc=0.25, per_layer=[0.25, 0.25])
        if name == 'mixedae':
            measured['_selectors'] = {'mean colour': dict(hr_acc=0.251),
                                      'raw pixels': dict(hr_acc=0.312)}
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
        # MAE's fine-tuning is paired with random init's by seed (the run's end and start):
        # differences 1.0, 2.0, 3.0 (Welch would give a wider interval)
        values[('ade20k', 'mae', seed)] = {'mIoU': 60.0 + 2 * seed}
        values[('ade20k', 'scratch', seed)] = {'mIoU': 59.0 + seed}
    values[('ade20k', 'mixedae', 0)] = {'mIoU': 58.0}
    _fake_run(demo, values, hr={'mixedae': [0.45, 0.35, 0.40]})
    timings = {'pretrain mae s0': 50.0, 'pretrain mixedae s0': 61.0}
    write_report(demo, seed_values(demo), timings)
    md = open(os.path.join(demo.out, 'report.md')).read()
    rows = _rows(md, '## Transfer')
    # the probe first: mean ± std (values), then differences with their intervals; MAE against
    # random init is paired by seed (constant differences: no spread, no interval, no bold)
    assert rows['MAE'].startswith('| MAE | 41.00 ± 1.00 (40.00, 41.00, 42.00) | – | '
                                  '+20.00 (no interval: no spread) | ')
    assert '| **+10.00 [+' in rows['MixedAE']            # Welch interval excludes 0: real
    naive = rows['naive mixing'].split(' | ')
    assert naive[2].startswith('-0.33 [') and not naive[2].startswith('**')
    assert rows['MixedAE, tied q/k start (variant)'].startswith(
        '| MixedAE, tied q/k start (variant) | missing |')
    # fine-tuning over every seed, with its own differences: paired MAE - random init
    # (mean 2.0, sd 1.0, n 3: 2.0 ± 4.303 / sqrt(3) = [-0.48, +4.48]); one run alone: no interval
    assert rows['MAE'].endswith('| 62.00 ± 2.00 (60.00, 62.00, 64.00) | – | '
                                '+2.00 [-0.48, +4.48] |')
    assert rows['random init'].split(' | ')[4] == '60.00 ± 1.00 (59.00, 60.00, 61.00)'
    assert rows['MixedAE'].split(' | ')[4:6] == ['58.00', '-4.00 (no interval: n = 1)']
    # hr_acc: untrained, pretrained, the difference, the logged value, the other encoders, chance
    # (paired by seed: differences 0.20, 0.25, 0.23, as in test_stats' hand-computed case)
    assert [_rows(md, '## Homologous recognition')['MixedAE']] == [
        '| MixedAE | 0.210 ± 0.010 (0.200, 0.210, 0.220) | 0.437 ± 0.032 '
        '(0.400, 0.460, 0.450) | **+0.227 [+0.164, +0.289]** | 0.400 ± 0.050 '
        '(0.450, 0.350, 0.400) |']
    # one rule decides bold for the whole report, stated once with its family size: the probe
    # differences of MixedAE and naive mixing against MAE and random init (4; MAE - random init
    # has no spread, and random init - MAE is not counted again), UperNet's MAE - random init
    # (1), and the paired hr_acc rows of the 3 top-K methods
    assert md.count("Holm's step-down correction at 5 % over its 8 comparisons") == 1
    assert rows['random init'].split(' | ')[2] == '–'
    # the no-learning selectors beside the encoders, and hr_acc per top-K layer over seeds
    assert '| mean colour (no network) | 0.251 | 0.251 |' in md
    assert '| raw pixels (no network) | 0.312 | 0.312 |' in md
    layers = _rows(md, '### hr_acc per top-K layer')
    assert layers['MixedAE, step 0'] == ('| MixedAE, step 0 | 0.110 ± 0.010 | 0.310 ± 0.010 |')
    assert layers["MAE (in MixedAE's mixing)"].endswith('| 0.200 ± 0.000 | 0.400 ± 0.000 |')
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
