"""The tools' shared entry point: a user error is one line on stderr (exit 2), its traceback only
with --debug (and always in the runner's log file); other errors keep their traceback; known
third-party deprecation warnings are silenced."""
import argparse
import os
import subprocess
import sys
import warnings

import pytest
from mmengine.logging import MMLogger

from mixedae.utils.cli import (labelled, pop_debug_flag, positive_int, quiet_third_party_warnings,
                               run_tool)
from mixedae.utils.errors import InvalidInputError, MissingInputError, UserInputError
from support import ROOT


def run(main, argv, monkeypatch):
    monkeypatch.setattr(sys, 'argv', ['tool.py', *argv])
    with pytest.raises(SystemExit) as exit_:
        run_tool(main)
    return exit_.value.code


def missing(path='configs/none.py'):
    def main():
        raise MissingInputError(f'config file not found: {path}')
    return main


def test_user_error_is_one_line_on_stderr_with_status_2(monkeypatch, capsys):
    assert run(missing(), [], monkeypatch) == 2
    out = capsys.readouterr()
    assert out.err == 'error: config file not found: configs/none.py\n' and out.out == ''


def test_debug_adds_the_traceback_before_the_message(monkeypatch, capsys):
    seen = []
    assert run(lambda: seen.append(list(sys.argv)) or missing()(), ['a', '--debug'],
               monkeypatch) == 2
    err = capsys.readouterr().err
    assert err.startswith('Traceback (most recent call last):')
    assert err.endswith('\nerror: config file not found: configs/none.py\n')
    assert seen == [['tool.py', 'a']]                 # the tool never sees --debug


def test_every_tools_help_names_debug(monkeypatch, capsys):
    def main():
        parser = argparse.ArgumentParser(prog='tool.py')
        parser.add_argument('x')
        return parser.parse_args() and 0

    assert run(main, ['--help'], monkeypatch) == 0
    assert capsys.readouterr().out.rstrip().endswith(
        '--debug               on an error, print the traceback as well as the one-line message')
    assert run(main, ['a'], monkeypatch) == 0 and '--debug' not in capsys.readouterr().out
    assert run(main, [], monkeypatch) == 2 and '--debug' not in capsys.readouterr().out


def test_status_of_main_is_the_exit_status(monkeypatch):
    assert run(lambda: 3, [], monkeypatch) == 3
    assert run(lambda: 0, [], monkeypatch) == 0


def test_unexpected_errors_keep_their_traceback(monkeypatch):
    def main():
        raise KeyError('type')
    monkeypatch.setattr(sys, 'argv', ['tool.py'])
    with pytest.raises(KeyError):
        run_tool(main)


def test_the_project_errors_are_user_errors():
    from mixedae.datasets.validation import DataError
    from mixedae.suite.pretrain_checkpoint import CheckpointKindError
    from mixedae.utils.checkpoint import CheckpointError
    from mixedae.utils.mmcv_ops import MissingMmcvOpError
    for cls in (DataError, CheckpointKindError, CheckpointError, MissingMmcvOpError):
        assert issubclass(cls, UserInputError), cls
    assert issubclass(MissingInputError, FileNotFoundError)


def test_traceback_goes_to_the_runner_log_file(tmp_path, monkeypatch, capsys):
    log = tmp_path / 'run.log'
    MMLogger.get_instance('test_cli_runner', log_file=str(log))
    assert run(missing(), [], monkeypatch) == 2
    assert capsys.readouterr().err == 'error: config file not found: configs/none.py\n'
    text = log.read_text()
    assert 'Traceback (most recent call last):' in text and 'configs/none.py' in text


def test_pop_debug_flag_stops_at_the_separator():
    argv = ['tool.py', '--debug', 'x', '--', '--debug']
    assert pop_debug_flag(argv) and argv == ['tool.py', 'x', '--', '--debug']
    argv = ['tool.py', 'x']
    assert not pop_debug_flag(argv) and argv == ['tool.py', 'x']


def test_pkg_resources_deprecation_is_silenced_and_nothing_else():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        quiet_third_party_warnings()
        from mmengine.utils import is_installed     # re-imports pkg_resources on each call
        is_installed('mmdet')
        warnings.warn('pkg_resources is deprecated as an API. See ...', UserWarning)
        warnings.warn('our own warning', UserWarning)
    assert [str(w.message) for w in caught] == ['our own warning']


def tool(*args):
    env = {**os.environ, 'PYTHONPATH': ROOT, 'OMP_NUM_THREADS': '1'}
    return subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'train.py'), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_train_tool_with_a_missing_config(tmp_path):
    path = str(tmp_path / 'no_such_config.py')
    out = tool(path)
    assert out.returncode == 2
    assert out.stderr == f'error: config file not found: {path}\n'
    out = tool(path, '--debug')
    assert out.returncode == 2
    assert 'Traceback (most recent call last):' in out.stderr and 'load_config' in out.stderr
    assert out.stderr.endswith(f'error: config file not found: {path}\n')


def test_an_abort_in_c_code_shows_where_python_was(tmp_path):
    # a C-level abort (SIGABRT, as std::terminate raises) bypasses Python's exception handling;
    # the tool still prints the Python stack of the thread it hit
    script = tmp_path / 'aborting_tool.py'
    script.write_text('import os\nfrom mixedae.utils.cli import run_tool\n\n'
                      'def stop_here():\n    os.abort()\n\n'
                      'run_tool(lambda: stop_here())\n')
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode == -6
    assert 'Fatal Python error: Aborted' in out.stderr
    assert 'in stop_here' in out.stderr and 'aborting_tool.py", line 5' in out.stderr


def test_labelled_splits_at_the_first_equals_sign():
    assert labelled('mae=work_dirs/a=b/epoch_4.pth', '--checkpoint') == (
        'mae', 'work_dirs/a=b/epoch_4.pth')
    for bad in ('noequals', '=p.pth', 'label='):
        with pytest.raises(InvalidInputError, match=f"--checkpoint '{bad}': expected LABEL=VALUE"):
            labelled(bad, '--checkpoint')


def test_positive_int_refuses_zero_negative_and_words():
    assert positive_int('3') == 3
    for text in ('0', '-2', 'x', '1.5', ''):
        with pytest.raises(argparse.ArgumentTypeError, match=f"got {text!r}"):
            positive_int(text)
