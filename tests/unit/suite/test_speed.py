"""Speed benchmarks (mixedae/suite/speed.py): FLOP counts against hand counts, configs, tables.

Timings are never asserted; the tables are checked on given numbers.
"""
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from timm.models.vision_transformer import VisionTransformer

from mixedae.suite import speed
from support import REPO, ROOT


def test_linear_flops_match_the_hand_count():
    b, n_in, n_out = 3, 8, 5
    lin = torch.nn.Linear(n_in, n_out)
    x = torch.randn(b, n_in)
    with torch.no_grad():
        assert speed.count_flops(lambda: lin(x)) == 2 * b * n_in * n_out
    x.requires_grad_()
    # backward: one product for the input's gradient, one for the weight's
    assert speed.count_flops(lambda: lin(x).sum().backward()) == 3 * 2 * b * n_in * n_out


def test_cpu_attention_flops_are_counted():
    b, h, n, d = 2, 3, 10, 16
    q = torch.randn(b, h, n, d)
    bias = torch.randn(1, h, n, n)
    flops = speed.count_flops(lambda: F.scaled_dot_product_attention(q, q, q, attn_mask=bias))
    assert flops == 2 * (2 * b * h * n * n * d)  # q k^T and p v


def test_tiny_vit_forward_flops_match_the_hand_count():
    b, size, p, d, depth = 2, 32, 8, 32, 2
    vit = VisionTransformer(img_size=size, patch_size=p, embed_dim=d, depth=depth, num_heads=4,
                            num_classes=0, global_pool='')
    x = torch.randn(b, 3, size, size)
    patches = (size // p) ** 2
    tokens = patches + 1
    embed = 2 * b * patches * d * 3 * p * p
    # qkv (3d), projection (d), MLP (4d in, 4d out) per token; q k^T and p v per head
    block = 2 * b * tokens * d * (3 * d + d + 8 * d) + 2 * 2 * b * tokens * tokens * d
    with torch.no_grad():
        assert speed.count_flops(lambda: vit.forward_features(x)) == embed + depth * block


def test_cpu_model_name_reads_cpuinfo(tmp_path):
    info = tmp_path / 'cpuinfo'
    info.write_text('processor\t: 0\nvendor_id\t: X\nmodel name\t: Example CPU 9000 @ 3 GHz\n')
    assert speed.cpu_model_name(str(info)) == 'Example CPU 9000 @ 3 GHz'
    assert speed.cpu_model_name(str(tmp_path / 'absent'))  # platform's answer, not empty


def test_cpu_description_names_the_model_and_cores():
    text = speed.device_description('cpu')
    assert text.startswith(speed.cpu_model_name() + ', ')
    assert f'{len(os.sched_getaffinity(0))} cores' in text and torch.__version__ in text


class FakeMemory:
    """An allocator whose counters a test moves by hand, and its MemoryReader."""

    def __init__(self):
        self.now = self.top = 0.
        self.reader = speed.MemoryReader(lambda: self.now, lambda: self.top, self.reset)

    def reset(self):
        self.top = self.now

    def hold(self, mib):
        self.now += mib
        self.top = max(self.top, self.now)


def test_time_step_runs_warmup_then_repeats():
    calls = []
    memory = FakeMemory()
    out = speed.time_step(lambda: calls.append(1), torch.device('cpu'), warmup=2, repeats=3,
                          memory=memory.reader)
    assert len(calls) == 5 and len(out['times']) == 3
    assert out['step_s'] == sorted(out['times'])[1]
    assert out['min_s'] == min(out['times']) and out['max_s'] == max(out['times'])
    with pytest.raises(ValueError, match='repeats >= 1'):
        speed.time_step(lambda: None, torch.device('cpu'), warmup=0, repeats=0,
                        memory=memory.reader)


def test_each_measurement_has_its_own_peak():
    """A first measurement that peaks high (in its warm-up and in its timed steps) does not
    raise the peak of the next one, nor does memory held before the model was built."""
    memory = FakeMemory()

    def spike(mib):
        def step():
            memory.hold(mib)
            memory.hold(-mib)
        return step

    first = speed.time_step(spike(1000), torch.device('cpu'), 1, 3, memory.reader)
    memory.hold(50)                                       # held before the second model
    baseline = memory.reader.current()
    second = speed.time_step(spike(10), torch.device('cpu'), 1, 3, memory.reader, baseline)
    assert (first['peak_mib'], second['peak_mib']) == (1000, 10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_cuda_peaks_are_reset_between_measurements():
    dev = torch.device('cuda')
    memory = speed.memory_reader(dev)

    def allocate(mib):
        return lambda: torch.empty(mib * 2 ** 20, dtype=torch.uint8, device=dev).fill_(1)

    speed.release_memory(dev)
    first = speed.time_step(allocate(1024), dev, 1, 3, memory, memory.current())
    speed.release_memory(dev)
    second = speed.time_step(allocate(8), dev, 1, 3, memory, memory.current())
    assert first['peak_mib'] >= 1024 and second['peak_mib'] < 64


def test_spread_and_ratio_warnings():
    def timed(*times):
        return dict(times=list(times))

    assert speed.spread([0.9, 1.0, 1.2]) == pytest.approx(0.3)
    steady, wide = timed(0.99, 1.0, 1.01), timed(0.9, 1.0, 1.1)
    assert speed.ratio_warning('x', 1.05, steady, steady) is None             # 2 % < 5 %
    assert 'noisy' in speed.ratio_warning('x', 1.05, steady, wide)            # 20 % > 5 %
    assert speed.ratio_warning('x', 0.70, wide, wide) is None                 # 20 % < 30 %
    assert 'fewer than 3' in speed.ratio_warning('x', 2.0, timed(1.), steady)
    assert speed.report('title', '| t |', [None, 'w']) == 'title\n\n| t |\n\nwarning: w'
    assert speed.report('title', '| t |', [None]) == 'title\n\n| t |'


def test_pretrain_table_with_and_without_mfu():
    results = [dict(method='mae', step_s=0.5, min_s=0.4, max_s=0.6, images_per_s=32., flops=2e12,
                    peak_mib=1000.),
               dict(method='mixedae', step_s=0.55, min_s=0.55, max_s=0.56, images_per_s=29.1,
                    flops=2.2e12, peak_mib=1200.)]
    assert speed.pretrain_table(results[:1], 'cpu').splitlines()[2].split(' | ')[3] == '2'
    lines = speed.pretrain_table(results, 'cpu').splitlines()
    assert lines[0] == ('| method | s / step: min / median / max | images / s | TFLOP / step | '
                        'TFLOP/s | peak RSS growth (MiB) | time vs MAE |')
    assert lines[3] == '| mixedae | 0.5500 / 0.5500 / 0.5600 | 29.1 | 2.2 | 4 | 1200 | 1.100 |'
    lines = speed.pretrain_table(results, 'cuda', peak_tflops=8.).splitlines()
    assert 'MFU' in lines[0] and 'peak GPU memory (MiB)' in lines[0]
    assert lines[2] == '| mae | 0.4000 / 0.5000 / 0.6000 | 32.0 | 2 | 4 | 50 % | 1000 | 1.000 |'


def test_backbone_table_ratios_to_the_yardstick():
    row = dict(input='64x64', batch=4, images_per_s=1.)
    results = [dict(protocol='ade20k', model='timm', step_s=0.2, min_s=0.2, max_s=0.2,
                    times=[0.2] * 3, peak_mib=100., **row),
               dict(protocol='ade20k', model='config', step_s=0.5, min_s=0.1, max_s=2.,
                    times=[0.1, 0.5, 2.], peak_mib=180., **row)]
    lines = speed.backbone_table(results, 'cpu').splitlines()
    assert lines[2].endswith('| 0.2000 / 0.2000 / 0.2000 | 1.0 | 100 | 1.00 | 1.00 |')
    assert lines[3] == ('| ade20k | mixedae.ViT | 64x64 | 4 | 0.1000 / 0.5000 / 2.0000 | 1.0 | '
                        '180 | 2.50 | 1.80 |')
    # spread 380 % > 150 %: the 2.5x is noisy
    assert 'ade20k backbone vs timm 2.50x is noisy' in speed.backbone_warnings(results)[0]


@pytest.mark.parametrize('method', speed.PRETRAIN_METHODS)
def test_pretrain_model_config_is_the_method_config_at_base(method):
    own = Config.fromfile(REPO.config(f'{method}-base')).model
    own.pop('batch_size')
    assert speed.pretrain_model_config(REPO, method, 'base').to_dict() == own.to_dict()


def test_pretrain_model_config_takes_the_method_knobs_to_other_archs():
    mae = speed.pretrain_model_config(REPO, 'mae', 'tiny')
    assert (mae.backbone.group_size, mae.contrast_weight, mae.backbone.embed_dim) == (1, 0., 64)
    naive = speed.pretrain_model_config(REPO, 'naivemix', 'large')
    assert naive.backbone.attn_mode == 'vanilla' and not naive.backbone.use_segment_embed
    assert naive.backbone.embed_dim == 1024
    with pytest.raises(ValueError, match="unknown arch 'huge'"):
        speed.pretrain_model_config(REPO, 'mae', 'huge')


def test_homologous_attention_shape_is_the_encoders():
    """H, N', hd and K of the benchmarks come from the MixedAE config: ViT-B/16 at 224 px with
    G = 4 keeps K = 196 / 4 + 1 = 50 of 200 tokens; the tiny config's built encoder agrees."""
    assert speed.homologous_attention_shape(REPO, 'base') == (12, 200, 64, 50)
    from mmengine.registry import DefaultScope

    from mixedae.registry import MODELS
    cfg = speed.pretrain_model_config(REPO, 'mixedae', 'tiny')
    with DefaultScope.overwrite_default_scope('mixedae'):   # whatever scope a test left
        encoder = MODELS.build(cfg.backbone)
    attn = encoder.blocks[0].attn
    n = encoder.patch_embed.num_patches + encoder.group_size
    assert speed.homologous_attention_shape(REPO, 'tiny') == (attn.num_heads, n, attn.head_dim,
                                                              attn.topk)


def test_pretrain_steps_leave_hr_acc_off_unless_asked(monkeypatch):
    """The benchmark's MixedAE steps (the FLOP count's and the timed ones) call the top-K
    attention without labels, so no keep mask is unpacked for hr_acc; hr_acc=True gives them
    labels on every step."""
    from mixedae.models.layers import homologous_attention
    calls = []

    def recording(q, k, v, topk, labels=None, *args, **kwargs):
        calls.append(labels is not None)
        return real(q, k, v, topk, labels, *args, **kwargs)

    real = homologous_attention.topk_attention
    monkeypatch.setattr(homologous_attention, 'topk_attention', recording)
    depth = speed.pretrain_model_config(REPO, 'mixedae', 'tiny').backbone.depth
    for hr_acc in (False, True):
        calls.clear()
        speed.measure_pretrain(REPO, 'mixedae', 'tiny', batch=4, warmup=1, repeats=1,
                               hr_acc=hr_acc)
        assert calls == [hr_acc] * 3 * depth          # FLOP count, warm-up, timed step


def test_backbone_configs_and_their_yardsticks():
    ade = speed.backbone_config(REPO, 'ade20k')
    assert ade.use_rel_pos_bias and tuple(ade.img_size) == (512, 512) and 'init_cfg' not in ade
    assert tuple(speed.backbone_config(REPO, 'vitdet').img_size) == (1024, 1024)
    assert tuple(speed.backbone_config(REPO, 'coco_a', img_size=224).img_size) == (224, 224)
    cfg = speed.backbone_config(REPO, 'vitdet', 'tiny')
    ours, timm = speed.build_backbone('config', cfg), speed.build_backbone('timm', cfg)
    assert timm.cls_token is None and len(timm.blocks) == len(ours.blocks) == 4
    assert all(b.attn.fused_attn for b in timm.blocks)
    assert timm.blocks[0].mlp.fc1.weight.shape == ours.blocks[0].mlp.fc1.weight.shape
    # same parameters apart from the relative position tables
    extra = sum(p.numel() for n, p in ours.named_parameters()
                if 'relative_position' in n or '.rel_pos_' in n)
    assert extra > 0
    assert (sum(p.numel() for p in ours.parameters()) - extra
            == sum(p.numel() for p in timm.parameters()))
    assert speed.backbone_config(REPO, 'coco_a').with_cp and not timm.grad_checkpointing
    cfg.with_cp = True
    assert speed.build_backbone('timm', cfg).grad_checkpointing
    with pytest.raises(ValueError, match="unknown protocol 'voc'"):
        speed.backbone_config(REPO, 'voc')


def test_backbone_benchmark_needs_no_mmseg_or_mmdet_models():
    """The backbones build without importing mmseg's or mmdet's model packages, which need
    mmcv's compiled ops (a GPU machine may only have mmcv built without them)."""
    script = ('import sys\n'
              'from mixedae.suite import speed\n'
              'from mixedae.suite.repo import Repo\n'
              f'repo = Repo({ROOT!r})\n'
              'for p in ("ade20k", "coco_a", "vitdet"):\n'
              '    speed.build_backbone("config", speed.backbone_config(repo, p, "tiny"))\n'
              'print(sorted(m for m in sys.modules if m in ("mmseg.models", "mmdet.models")))\n')
    out = subprocess.run([sys.executable, '-c', script], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == '[]'


def test_backbones_measured_one_after_another_in_process():
    results, text = speed.benchmark_backbones(REPO, ['ade20k'], 'tiny', batch=1, warmup=0,
                                              repeats=2)
    assert [(r['protocol'], r['model'], r['input']) for r in results] == [
        ('ade20k', 'timm', '64x64'), ('ade20k', 'config', '64x64')]
    assert all(len(r['times']) == 2 and r['min_s'] <= r['step_s'] <= r['max_s'] for r in results)
    assert 'less isolated' in text.splitlines()[0]
    assert text.splitlines()[-1].startswith('warning: ade20k backbone vs timm ')


def test_peak_rss_restarts_from_the_current_rss():
    big = torch.ones(64 * 2 ** 20 // 4 * 4)                            # 256 MiB
    assert speed.peak_rss_mib() >= speed.current_rss_mib() >= 256
    del big
    speed.reset_peak_rss()
    # the peak restarts at the current RSS, whatever the process held before (how much of the
    # freed tensor the allocator returned to the system depends on the process's history)
    assert speed.current_rss_mib() - 1 <= speed.peak_rss_mib() <= speed.current_rss_mib() + 32


@pytest.mark.slow
def test_benchmark_tools_print_their_tables(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run(
        [sys.executable, 'tools/benchmark_backbone.py', '--scale', 'tiny', '--batch', '1',
         '--warmup', '0', '--repeats', '1', '--protocols', 'vitdet'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith('| ')]
    assert len(rows) == 3 and speed.cpu_model_name() in out.stdout
    assert 'rests on 1 repeat(s), fewer than 3' in out.stdout
    assert rows[1].startswith('| vitdet | timm ViT') and rows[1].endswith('| 1.00 | 1.00 |')
    assert rows[2].startswith('| vitdet | mixedae.ViT | 64x64 | 1 |')
    out = subprocess.run(
        [sys.executable, 'tools/benchmark_pretrain.py', '--arch', 'tiny', '--batch', '4',
         '--warmup', '0', '--repeats', '1', '--methods', 'mae', '--peak-tflops', '1',
         '--out', str(tmp_path / 'r.json')],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith('| ')]
    assert len(rows) == 2 and 'MFU' in rows[0] and rows[1].endswith('| 1.000 |')
    saved = json.loads((tmp_path / 'r.json').read_text())
    assert saved['results'][0]['method'] == 'mae' and saved['results'][0]['flops'] > 0


@pytest.mark.parametrize('bench', ['benchmark_pretrain', 'benchmark_backbones'])
def test_a_device_this_machine_lacks_is_refused_before_any_model(monkeypatch, bench):
    # the README's GPU commands (--device cuda) on a machine without one: one line, not
    # torch's "Found no NVIDIA driver" traceback from the first .to(device)
    from mixedae.utils.errors import DeviceUnavailableError, InvalidInputError
    built = []
    monkeypatch.setattr(speed, 'measure_pretrain', lambda *a: built.append(a))
    monkeypatch.setattr(speed, 'measure_backbone', lambda *a: built.append(a))
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    run = getattr(speed, bench)
    with pytest.raises(DeviceUnavailableError, match=r"^--device cuda: no CUDA device visible "
                                                     r"to torch .*--device cpu"):
        run(REPO, device='cuda')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    with pytest.raises(DeviceUnavailableError, match=r'^--device cuda:2: torch sees 2 CUDA '
                                                     r'devices \(cuda:0 to cuda:1\)$'):
        run(REPO, device='cuda:2')
    with pytest.raises(InvalidInputError, match=r"^--device 'gpu': not a torch device; give "
                                                r'cpu, cuda or cuda:N$'):
        run(REPO, device='gpu')
    assert built == []
