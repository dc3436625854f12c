"""tools/analyze_logs.py and tools/print_config.py: curves and train time from work dirs, the
resolved config."""
import json
import os

import cv2
import pytest

from mixedae.suite.stats import read_records
from mixedae.utils.errors import InvalidInputError, MissingInputError
from support import load_tool


def write_run(work_dir, stamp, records):
    path = os.path.join(work_dir, stamp, 'vis_data', 'scalars.json')
    os.makedirs(os.path.dirname(path))
    with open(path, 'w') as f:
        f.writelines(json.dumps(r) + '\n' for r in records)


@pytest.fixture
def runs(tmp_path):
    a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
    write_run(a, '1', [dict(loss=2.0, time=9.0, step=10), dict(loss=1.5, time=1.0, step=20),
                       dict(mIoU=30.0, step=20)])
    write_run(a, '2', [dict(loss=1.4, time=1.2, step=20), dict(loss=1.0, time=1.4, step=30)])
    write_run(b, '1', [dict(loss=3.0, time=2.0, step=10), dict(loss=2.5, time=2.0, step=20)])
    return a, b


def test_records_merge_training_and_validation_by_step(runs):
    assert read_records(runs[0]) == [dict(loss=2.0, time=9.0, step=10),
                                     dict(loss=1.4, time=1.2, step=20),   # the resumed one
                                     dict(mIoU=30.0, step=20),
                                     dict(loss=1.0, time=1.4, step=30)]


def test_plot_curve_and_train_time(runs, tmp_path, capsys):
    tool = load_tool('analyze_logs')
    out = str(tmp_path / 'c.png')
    assert tool.main(['plot_curve', *runs, '--keys', 'loss', 'mIoU', '--out', out]) == 0
    image = cv2.imread(out)
    assert image is not None and image.shape[1] == 900          # two panels of 4.5 in
    assert tool.main(['cal_train_time', *runs, '--legend', 'A', 'B']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2:] == ['A: 1.3000 s / iteration (median after the first record), '
                          '3 training records',
                          'B: 2.0000 s / iteration (median after the first record), '
                          '2 training records']
    with pytest.raises(InvalidInputError, match=r"--keys \['acc'\]: logged by none"):
        tool.main(['plot_curve', *runs, '--keys', 'acc'])
    with pytest.raises(MissingInputError, match='no <timestamp>/vis_data/scalars.json'):
        tool.main(['plot_curve', str(tmp_path)])


def test_print_config_resolves_overrides(tmp_path, capsys):
    tool = load_tool('print_config')
    config = 'configs/ade20k/upernet_vit-tiny-p8_1xb4-40iter_ade20k-synthetic-64.py'
    out = tmp_path / 'resolved.py'
    assert tool.main([config, '--cfg-options', 'train_cfg.max_iters=7', '--out', str(out)]) == 0
    text = capsys.readouterr().out
    assert "max_iters=7" in text and out.read_text() == text
    with pytest.raises(InvalidInputError, match="'trian_cfg' is not a field"):
        tool.main([config, '--cfg-options', 'trian_cfg.max_iters=7'])


def test_train_time_refuses_the_plot_options_it_would_ignore(runs, tmp_path, capsys):
    # cal_train_time draws nothing: --out / --keys / --title are refused, not silently dropped
    tool = load_tool('analyze_logs')
    out = tmp_path / 'c.png'
    for extra in (['--out', str(out)], ['--keys', 'mIoU'], ['--title', 'T']):
        with pytest.raises(SystemExit) as exit_info:
            tool.main(['cal_train_time', *runs, *extra])
        assert exit_info.value.code == 2
        assert f'unrecognized arguments: {extra[0]}' in capsys.readouterr().err
    assert not out.exists()
