"""Transfer results collection (tables with missing runs), their bar chart, and the data
generator tool."""
import json
import os

import cv2
import numpy as np
import pytest
from mmengine.config import Config

from support import ROOT, load_tool
from mixedae.utils.errors import InvalidInputError, MissingInputError, UserInputError
from mixedae.suite.plots import bar_figure, bar_layout, bar_x
from mixedae.suite.results import (MISSING, collect, compare_to_reference, input_problems,
                                   load_matrix, results_markdown, run_commands)
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


SHIPPED = 'configs/matrix_vit-b16.json'
#: the project's own pretrainings of the equal-budget comparison
OWN_METHODS = ('mixedae', 'mae', 'naivemix')


def test_shipped_matrix_pretrains_each_method_at_one_schedule_and_loads_what_it_wrote():
    matrix = load_matrix(os.path.join(ROOT, SHIPPED))
    pre = {p['name']: p for p in matrix['pretrain']}
    assert sorted(pre) == sorted(OWN_METHODS)
    epochs = {name: Config.fromfile(os.path.join(ROOT, p['config'])).train_cfg.max_epochs
              for name, p in pre.items()}
    assert set(epochs.values()) == {1600}, epochs    # one schedule for the three
    for name, p in pre.items():
        assert isinstance(p['seed'], int)
        transfer = [r for r in matrix['runs'] if r['method'] == name]
        assert sorted(r['task'] for r in transfer) == ['ade20k', 'coco']
        assert {r['checkpoint'] for r in transfer} == {p['checkpoint']}
        assert all('recipe' not in r for r in transfer)   # the one default recipe
    # the releases are methods of their own, never mixed with the project's runs
    own = {p['checkpoint'] for p in pre.values()}
    official = {r['method']: r['checkpoint'] for r in matrix['runs']
                if r['method'].endswith('-official')}
    assert sorted(official) == ['ibot-official', 'mae-official'] and not own & set(
        official.values())
    assert all(isinstance(r['seed'], int) for r in matrix['runs'])
    assert {r['method'] for r in matrix['runs'] if 'checkpoint' not in r} == {'scratch'}
    assert len({r['work_dir'] for r in matrix['runs']}) == len(matrix['runs'])


def test_commands_print_the_pretrainings_before_the_transfer_runs(capsys):
    matrix = load_matrix(os.path.join(ROOT, SHIPPED))
    assert load_tool('results').main(['commands', os.path.join(ROOT, SHIPPED)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 * (len(matrix['pretrain']) + len(matrix['runs']))
    for i, p in enumerate(matrix['pretrain']):
        assert lines[2 * i].startswith(f'tools/dist_train.sh {p["config"]} 8 ')
        assert lines[2 * i + 1].startswith('.venv/bin/python tools/convert_checkpoint.py ')
        assert f' {p["checkpoint"]} --src-format mixedae' in lines[2 * i + 1]
    transfer = lines[2 * len(matrix['pretrain']):]
    assert all(line.startswith(('tools/dist_train.sh configs/ade20k/',
                                'tools/dist_train.sh configs/coco/', 'tools/dist_test.sh'))
               for line in transfer)
    # dependency order: each own method's encoder is converted before a run loads it
    for run in (r for r in matrix['runs'] if r['method'] in OWN_METHODS):
        writes = [i for i, line in enumerate(lines) if line.startswith(
            '.venv/bin/python tools/convert_checkpoint.py ') and f' {run["checkpoint"]} ' in line]
        convert = writes[0] if writes else None
        assert convert is not None, f'nothing writes {run["checkpoint"]}'
        assert convert < lines.index(run_commands(run, 8)[0]), run['method']


def _recipe_matrix(tmp_path, recipe):
    """Two seeded ADE20K runs of one method, the second with ``recipe``."""
    runs = [dict(method='ibot', task='ade20k', config='configs/ade20k/x.py', work_dir=f'w/{i}',
                 metrics=str(tmp_path / f'{i}.json'), seed=0) for i in range(2)]
    runs[1]['recipe'] = recipe
    write_json(str(tmp_path / '0.json'), {'mIoU': 48.0})
    write_json(str(tmp_path / '1.json'), {'mIoU': 50.0})
    path = tmp_path / 'matrix.json'
    write_json(str(path), dict(gpus=2, scale='ViT-B/16', runs=runs))
    return path


def test_a_recipe_override_is_applied_and_named_in_the_method_label(tmp_path):
    path = _recipe_matrix(tmp_path, {'name': 'lr 8e-5',
                                     'cfg_options': {'optim_wrapper.optimizer.lr': 8e-05}})
    runs = load_matrix(str(path))['runs']
    assert [(r['method'], r['ADE20K mIoU']) for r in collect(runs)] == [
        ('ibot (ViT-B/16)', '48.00'), ('ibot (lr 8e-5; ViT-B/16)', '50.00')]  # never averaged
    train, test = run_commands(runs[1], 2)
    assert train.endswith('--cfg-options optim_wrapper.optimizer.lr=8e-05 randomness.seed=0')
    assert test.endswith('--cfg-options optim_wrapper.optimizer.lr=8e-05')
    assert 'optim_wrapper' not in run_commands(runs[0], 2)[0]
    [diff] = compare_to_reference(runs, 'ibot')
    assert diff['method'] == 'ibot (lr 8e-5) − ibot'


@pytest.mark.parametrize('recipe,message', [
    ({'cfg_options': {'optim_wrapper.optimizer.lr': 8e-05}},
     r'runs\[1\]\.recipe must be \{"name", "cfg_options"\}'),
    ({'name': '', 'cfg_options': {'optim_wrapper.optimizer.lr': 8e-05}},
     r'runs\[1\]\.recipe\.name must be a non-empty string'),
    ({'name': 'lr', 'cfg_options': {}}, r'runs\[1\]\.recipe\.cfg_options must be a non-empty'),
    ('lr 8e-5', r'runs\[1\]\.recipe must be'),
])
def test_a_bad_recipe_override_is_refused_naming_the_file_and_key(tmp_path, recipe, message):
    with pytest.raises(InvalidInputError, match=r'matrix\.json: ' + message):
        load_matrix(str(_recipe_matrix(tmp_path, recipe)))


def test_a_recipe_key_the_config_lacks_is_an_input_problem(tmp_path):
    run = dict(method='ibot', task='ade20k', work_dir=str(tmp_path / 'w'), metrics='m.json',
               config=os.path.join(ROOT, 'configs/ade20k/upernet_vit-b16-ibot_8xb2-160k_'
                                         'ade20k-512x512.py'),
               recipe={'name': 'lr', 'cfg_options': {'optim_wrapper.optimiser.lr': 8e-05}})
    path = tmp_path / 'matrix.json'
    write_json(str(path), dict(runs=[run]))
    [problem] = input_problems(load_matrix(str(path)))
    assert problem == ("ibot/ade20k: recipe \"lr\" sets ['optim_wrapper.optimiser.lr'], not keys "
                       f"of {run['config']} (fix recipe.cfg_options in the matrix)")
