"""mixedae.suite.demo.runner: MMEngine's training log lines condensed to one progress line; a
failed child named with its log's tail."""
import os
import sys

import pytest

from mixedae.suite.demo.runner import CommandFailed, progress_line, stream


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


def test_a_failed_child_raises_with_the_tail_of_its_log(tmp_path):
    log = tmp_path / 'logs' / 'child.log'
    cmd = [sys.executable, '-c', 'print("loaded"); raise SystemExit(3)']
    with pytest.raises(CommandFailed, match=rf'(?s)command failed \(3\): .*\n--- last lines of '
                                            rf'{log} ---\n.*loaded\n$'):
        stream(cmd, str(log), dict(os.environ), str(tmp_path))
    assert log.read_text().endswith('loaded\n')
