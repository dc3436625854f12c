"""Transfer results collection (tables with missing runs), their bar chart, and the data
generator tool."""
import json
import os

import cv2
import numpy as np
import pytest

from support import load_tool
from mixedae.utils.errors import InvalidInputError, MissingInputError, UserInputError
from mixedae.suite.plots import bar_figure, bar_layout, bar_x
from mixedae.suite.results import (MISSING, collect, compare_to_reference, load_matrix,
                                   results_markdown, run_commands)
from mixedae.suite.tables import ANCHOR_HEADING


def write_json(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(data, f)


@pytest.fixture
def matrix(tmp_path):
    m = tmp_path / 'm'
    write_json(str(m / 'ade_mixedae.json'), {'mIoU': 49.87, 'aAcc': 80.0})
    write_json(str(m / 'coco_mixedae.json'), {'coco/bbox_mAP': 0.512, 'coco/segm_mAP': 0.4555})
    write_json(str(m / 'ade_mae.json'), {'mIoU': 48.1})
    write_json(str(m / 'abl_lam0.json'), {'mIoU': 47.5})
    runs = [dict(method=meth, task=task, config=f'configs/{task}/x.py', work_dir=f'w/{task}_{meth}',
                 metrics=str(m / f'{"ade" if task == "ade20k" else "coco"}_{meth}.json'),
                 **({'checkpoint': f'pretrain/{meth}.pth'} if meth != 'scratch' else {}))
            for meth in ('mixedae', 'mae', 'scratch') for task in ('ade20k', 'coco')]
    ablations = [dict(name='lam0', task='ade20k', metrics=str(m / 'abl_lam0.json')),
                 dict(name='lam0.5', task='ade20k', metrics=str(m / 'abl_lam0.5.json'))]
    path = tmp_path / 'matrix.json'
    write_json(str(path), dict(gpus=8, runs=runs, ablations=ablations))
    return path


def test_collect_marks_missing_runs(matrix):
    rows = collect(load_matrix(str(matrix))['runs'])
    assert rows == [
        {'method': 'mixedae', 'ADE20K mIoU': '49.87', 'COCO box AP': '51.20',
         'COCO mask AP': '45.55'},
        {'method': 'mae', 'ADE20K mIoU': '48.10', 'COCO box AP': 'missing',
         'COCO mask AP': 'missing'},
        {'method': 'scratch', 'ADE20K mIoU': 'missing', 'COCO box AP': 'missing',
         'COCO mask AP': 'missing'},
    ]
    table = results_markdown(rows)
    assert '| mixedae | 49.87 | 51.20 | 45.55 |' in table
    assert ('| *MAE 1600ep (MAE paper; COCO: Mask R-CNN, LSJ 100 ep of Li et al. 2021, '
            'neither protocol A nor B)* | 48.1 | 50.3 | 44.9 |') in table


def test_benchmark_tool_collect_and_commands(matrix, tmp_path, capsys):
    bench = load_tool('results')
    assert bench.main(['collect', str(matrix), '--out', str(tmp_path / 'out')]) == 0
    md = (tmp_path / 'out' / 'results.md').read_text()
    assert '| scratch | missing | missing | missing |' in md
    assert '| lam0 | 47.50 |' in md and '| lam0.5 | missing |' in md
    csv = (tmp_path / 'out' / 'results.csv').read_text().splitlines()
    assert csv[0] == 'method,ADE20K mIoU,COCO box AP,COCO mask AP' and len(csv) == 4
    png = cv2.imread(str(tmp_path / 'out' / 'results.png'))
    assert png is not None and png.shape[:2] == (400, 800)
    capsys.readouterr()
    assert bench.main(['commands', str(matrix)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 12
    assert lines[0].startswith('tools/dist_train.sh configs/ade20k/x.py 8 --work-dir w/ade20k_mixedae')
    assert 'model.backbone.init_cfg.checkpoint=pretrain/mixedae.pth' in lines[0]
    assert 'init_cfg' not in run_commands(dict(method='scratch', task='ade20k', config='c.py',
                                               work_dir='w', metrics='m.json'), 2)[0]


def test_bars_share_one_geometry_and_show_missing_runs():
    assert [bar_x(0, i, 3) for i in range(3)] == pytest.approx([-0.8 / 3, 0.0, 0.8 / 3])
    assert bar_x(2, 0, 1) == 2.0
    rows = [{'method': 'a', 'ADE20K mIoU': '40.00', 'COCO box AP': MISSING},
            {'method': 'b', 'ADE20K mIoU': '41.00', 'COCO mask AP': '3.00'}]   # b: no box run
    assert bar_layout(rows) == [(0, 'ADE20K mIoU', bar_x(0, 0, 2), 40.0),
                                (0, 'COCO box AP', bar_x(0, 0, 2), None),
                                (1, 'ADE20K mIoU', bar_x(0, 1, 2), 41.0),
                                (1, 'COCO mask AP', bar_x(1, 1, 2), 3.0)]
    fig = bar_figure(rows)
    ade, coco = fig.axes                       # one panel per metric family, own y axes
    assert [t.get_text() for t in ade.get_xticklabels()] == ['ADE20K mIoU']
    assert [t.get_text() for t in coco.get_xticklabels()] == ['COCO box AP', 'COCO mask AP']
    assert [t.get_text() for t in ade.texts] == ['40.00', '41.00']
    assert [t.get_text() for t in coco.texts] == [MISSING, '3.00']
    assert ade.get_ylim()[1] > 41 and 3 < coco.get_ylim()[1] < 5   # COCO on its own scale
    empty = bar_figure([{'method': 'a', 'ADE20K mIoU': MISSING}])
    assert 'no results yet: every run is missing' in [t.get_text() for t in empty.texts]


def test_bad_matrix_names_the_entry(tmp_path):
    path = tmp_path / 'bad.json'
    write_json(str(path), dict(runs=[dict(method='x', task='voc', config='c', work_dir='w',
                                          metrics='m')]))
    with pytest.raises(InvalidInputError, match=r'bad.json: runs\[0\].task .voc.'):
        load_matrix(str(path))
    with pytest.raises(MissingInputError, match='matrix file not found: .*none.json'):
        load_matrix(str(tmp_path / 'none.json'))


def test_make_synthetic_data_writes_three_checked_views(tmp_path, capsys):
    tool = load_tool('make_synthetic_data')
    assert tool.main([str(tmp_path / 'syn'), '--num-train', '3', '--num-val', '2',
                      '--size', '32', '--seed', '5']) == 0
    assert '0 problem(s)' in capsys.readouterr().out
    assert len(os.listdir(tmp_path / 'syn' / 'pretrain')) == 3
    assert len(os.listdir(tmp_path / 'syn' / 'ade' / 'images' / 'validation')) == 2
    ann = json.load(open(tmp_path / 'syn' / 'coco' / 'annotations' / 'instances_val2017.json'))
    assert len(ann['images']) == 2 and len(ann['categories']) == 5
    # same seed, same scenes
    tool.main([str(tmp_path / 'again'), '--num-train', '3', '--num-val', '2', '--size', '32',
               '--seed', '5'])
    a = cv2.imread(str(tmp_path / 'syn' / 'ade' / 'annotations' / 'training' /
                       'ADE_train_00000002.png'), cv2.IMREAD_UNCHANGED)
    b = cv2.imread(str(tmp_path / 'again' / 'ade' / 'annotations' / 'training' /
                       'ADE_train_00000002.png'), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(a, b)


def _seeded_matrix(tmp_path, probe):
    """A matrix of seeded ADE20K runs: ``probe`` maps method -> mIoU per seed (None: not run)."""
    runs = []
    for method, values in probe.items():
        for seed, value in enumerate(values):
            metrics = str(tmp_path / f'{method}_s{seed}.json')
            if value is not None:
                write_json(metrics, {'mIoU': value})
            runs.append(dict(method=method, task='ade20k', config='configs/ade20k/x.py',
                             work_dir=f'w/{method}_s{seed}', metrics=metrics, seed=seed))
    path = tmp_path / 'matrix.json'
    write_json(str(path), dict(gpus=2, runs=runs, reference='mae'))
    return load_matrix(str(path))


def test_collect_aggregates_every_seed_of_a_method(tmp_path):
    matrix = _seeded_matrix(tmp_path, {'mixedae': [50.0, 52.0, 54.0], 'mae': [48.0, 48.5, None],
                                       'scratch': [30.0]})
    rows = collect(matrix['runs'])
    assert [r['ADE20K mIoU'] for r in rows] == [
        '52.00 ± 2.00 (50.00, 52.00, 54.00)',           # all three seeds, none dropped
        '48.25 ± 0.35 (48.00, 48.50) [1 of 3 missing]',  # a missing seed is said, not hidden
        '30.00']                                         # one run: its value alone
    assert rows[0]['COCO box AP'] == '–'
    # against the named reference: Welch interval of 52 - 48.25 (df, t by scipy), Holm decides
    diffs = {r['method']: r for r in compare_to_reference(matrix['runs'], 'mae')}
    from scipy.stats import ttest_ind
    ci = ttest_ind([50.0, 52.0, 54.0], [48.0, 48.5], equal_var=False).confidence_interval()
    assert diffs['mixedae − mae']['ADE20K mIoU'] == f'+3.75 [{ci.low:+.2f}, {ci.high:+.2f}]'
    assert diffs['scratch − mae']['ADE20K mIoU'] == '-18.25 (no interval: n = 1)'
    # each seed trains with its own seed
    assert run_commands(matrix['runs'][1], 2)[0].endswith('--cfg-options randomness.seed=1')
    tool = load_tool('results')
    assert tool.main(['collect', str(tmp_path / 'matrix.json'), '--out',
                      str(tmp_path / 'out')]) == 0
    md = (tmp_path / 'out' / 'results.md').read_text()
    assert '## Differences to mae' in md and "Holm's rule" in md


def test_matrix_refuses_runs_that_would_shadow_each_other(tmp_path):
    _seeded_matrix(tmp_path, {'mae': [48.0, 48.5]})
    raw = json.loads((tmp_path / 'matrix.json').read_text())
    raw['runs'][1]['seed'] = 0
    (tmp_path / 'matrix.json').write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r'runs\[0\] and runs\[1\] are both mae/ade20k with '
                                         r'seed 0: give each run its own "seed"'):
        load_matrix(str(tmp_path / 'matrix.json'))
    raw['runs'][1]['seed'] = '1'
    (tmp_path / 'matrix.json').write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"runs\[1\].seed must be an integer, got '1'"):
        load_matrix(str(tmp_path / 'matrix.json'))
    raw['runs'][1]['seed'], raw['reference'] = 1, 'ibot'
    (tmp_path / 'matrix.json').write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"reference 'ibot' is not a method of its runs"):
        load_matrix(str(tmp_path / 'matrix.json'))


@pytest.mark.parametrize('gpus', ['0', '-2', 'two'])
def test_gpus_override_must_be_a_positive_integer(tmp_path, capsys, gpus):
    # --gpus 0 was ignored (the matrix's 8 kept) and --gpus -2 went into the commands
    _seeded_matrix(tmp_path, {'mae': [48.0]})
    tool = load_tool('results')
    with pytest.raises(SystemExit) as exit_info:
        tool.main(['commands', str(tmp_path / 'matrix.json'), '--gpus', gpus])
    assert exit_info.value.code == 2
    assert f"--gpus: must be a positive integer, got '{gpus}'" in capsys.readouterr().err
    assert capsys.readouterr().out == ''


def test_gpus_override_goes_into_the_commands(tmp_path, capsys):
    _seeded_matrix(tmp_path, {'mae': [48.0]})
    assert load_tool('results').main(['commands', str(tmp_path / 'matrix.json'),
                                      '--gpus', '3']) == 0
    train = capsys.readouterr().out.splitlines()[0]
    assert train.startswith('tools/dist_train.sh ') and ' 3 --work-dir ' in train


@pytest.mark.parametrize('argv,option,reader', [
    (['status', '--out', 'x'], '--out', 'collect'),
    (['collect', '--partition', 'P'], '--partition', 'submit'),
    (['run', '--retry-failed'], '--retry-failed', 'submit'),
    (['commands', '--no-gres'], '--no-gres', 'submit'),
    (['status', '--gpus', '2'], '--gpus', 'commands, run, submit'),
])
def test_an_option_the_action_does_not_read_is_refused(tmp_path, argv, option, reader):
    # these were accepted and silently ignored (status --out wrote nothing, said nothing)
    _seeded_matrix(tmp_path, {'mae': [48.0]})
    action, *options = argv
    with pytest.raises(UserInputError, match=rf'^{option} is not used by {action} '
                                             rf'\(only by {reader}\)$'):
        load_tool('results').main([action, str(tmp_path / 'matrix.json'), *options])
    assert not (tmp_path / 'x').exists()
