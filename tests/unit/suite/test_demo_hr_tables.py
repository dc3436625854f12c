"""mixedae.suite.demo.hr_tables: what the report says about autocast."""
import os

from support import REPO
from mixedae.engine.optimizers.amp_optim_wrapper import AUTOCAST_LOG
from mixedae.suite.demo.hr_tables import amp_line
from mixedae.suite.demo.presets import PRESETS
from mixedae.suite.demo.stages import Demo


def test_report_says_what_autocast_the_runs_logged(tmp_path):
    demo = Demo(REPO, str(tmp_path / 'out'), str(tmp_path / 'data'), PRESETS['gpu'])
    assert amp_line(demo) == 'autocast requested (--amp) but no run logged its state'
    os.makedirs(os.path.dirname(demo.log('pretrain_mae_s0')))
    with open(demo.log('pretrain_mae_s0'), 'w') as f:
        f.write(f'12/06 - mmengine - INFO - {AUTOCAST_LOG} bfloat16 autocast on cuda\n')
    assert amp_line(demo) == "measured in the runs' first step: bfloat16 autocast on cuda"
