"""tools/demo.py: the GPU preset warns when no GPU is visible."""
import pytest

from support import load_tool


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
