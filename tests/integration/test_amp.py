"""Mixed precision: every model family trains under bf16 autocast on CPU through
mixedae.AmpOptimWrapper (MMEngine's AmpOptimWrapper code path), close to its fp32 twin."""
import contextlib
import copy
import os
import random

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope

from mixedae.datasets.synthetic import write_dataset
from mixedae.engine import AmpOptimWrapper
from mixedae.engine.optimizers import amp_optim_wrapper
from mixedae.engine.optimizers.amp_optim_wrapper import AUTOCAST_LOG, configure_amp
from mixedae.models import MAEDecoder
from support import ROOT, load_tool

PRETRAIN = os.path.join(ROOT, 'configs/pretrain/mixedae_vit-tiny-p8_1xb16-coslr-4e_tiny-32.py')
ADE = os.path.join(ROOT, 'configs/ade20k/upernet_vit-tiny-p8_1xb4-40iter_ade20k-synthetic-64.py')
PROBE = os.path.join(ROOT,
                     'configs/ade20k/linear_vit-tiny-p8_1xb4-300iter_ade20k-synthetic-64.py')
COCO = {
    'fpn': os.path.join(ROOT, 'configs/coco/'
                        'mask-rcnn_vit-tiny-p8_fpn_1xb2-20iter_coco-synthetic-64.py'),
    'vitdet': os.path.join(ROOT, 'configs/coco/'
                           'vitdet_mask-rcnn_vit-tiny-p8_1xb2-20iter_coco-synthetic-64.py'),
}
# the pretraining variants of the full-scale configs, applied to the tiny model
PRETRAIN_VARIANTS = {
    'mae': dict(backbone=dict(group_size=1), mask_ratio=0.75, contrast_weight=0.0),
    'naivemix': dict(backbone=dict(attn_mode='vanilla', use_segment_embed=False),
                     contrast_weight=0.0),
    'mixedae-topk': dict(),
    'mixedae-full': dict(mix_mode='full'),
    'mixedae-vanilla': dict(backbone=dict(attn_mode='vanilla')),
    'mixedae-oracle': dict(backbone=dict(attn_mode='oracle')),
}
STEPS = 2


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    return write_dataset(str(tmp_path_factory.mktemp('data')), num_train=8, num_val=1,
                         size=(64, 80), seed=0, views=('pretrain', 'ade20k', 'coco'))


def build(cfg: Config, scope: str, models, datasets, size: int):
    """``cfg``'s model (initialised) and its first ``size`` training samples, collated. The
    samples' random augmentation (crops, flips, resizes draw from numpy and random) is seeded,
    so the batch does not depend on which tests ran before in the same process."""
    with DefaultScope.overwrite_default_scope(scope):
        model = models.build(cfg.model)
        dataset = datasets.build(cfg.train_dataloader.dataset)
    model.init_weights()
    random.seed(0)
    np.random.seed(0)
    return model, pseudo_collate([dataset[i] for i in range(size)])


def train(model, optim_wrapper, data: dict, scope: str):
    """STEPS real steps (model.train_step: optim_context, forward, update_params), each from
    the same seed, on the same batch. Returns the losses and the dtype of the patch
    embedding's output in the last step."""
    seen = []
    hook = model.backbone.patch_embed.register_forward_hook(
        lambda m, i, out: seen.append(out[0].dtype if isinstance(out, tuple) else out.dtype))
    losses = []
    with DefaultScope.overwrite_default_scope(scope):
        for step in range(STEPS):
            torch.manual_seed(step)
            losses.append(model.train_step(copy.deepcopy(data), optim_wrapper)['loss'].item())
    hook.remove()
    return losses, seen[-1]


def check_bf16_against_fp32(cfg: Config, model, data: dict, scope: str, rtol: float):
    """Train copies of ``model`` in fp32 (the config's OptimWrapper) and under bf16 autocast
    (tools/train.py --amp's wrapper); their losses agree within ``rtol``."""
    assert cfg.optim_wrapper.type == 'OptimWrapper'          # tiny configs are fp32
    amp_cfg = copy.deepcopy(cfg)
    assert 'bf16 autocast on CPU' in configure_amp(amp_cfg, None)
    runs = {}
    for name, wrapper_cfg in (('fp32', cfg.optim_wrapper), ('bf16', amp_cfg.optim_wrapper)):
        net = copy.deepcopy(model).train()
        wrapper = build_optim_wrapper(net, copy.deepcopy(wrapper_cfg))
        assert isinstance(wrapper, AmpOptimWrapper) == (name == 'bf16')
        before = copy.deepcopy(net.state_dict())
        runs[name] = train(net, wrapper, data, scope)
        params = dict(net.named_parameters())
        assert all(p.dtype == torch.float32 for p in params.values())   # master weights
        assert any(not torch.equal(before[k], p) for k, p in params.items())
    (fp32, fp32_dtype), (bf16, bf16_dtype) = runs['fp32'], runs['bf16']
    assert (fp32_dtype, bf16_dtype) == (torch.float32, torch.bfloat16)
    assert all(torch.isfinite(torch.tensor(bf16)))
    assert bf16 == pytest.approx(fp32, rel=rtol), (fp32, bf16)


def test_decoder_under_autocast_scatters_the_mask_token():
    """The fp32 mask token was scattered with bf16 embedded tokens: 'scatter(): Expected
    self.dtype to be equal to src.dtype'."""
    decoder = MAEDecoder(num_patches=16, grid=(4, 4), patch_size=8, embed_dim=32,
                         decoder_embed_dim=16, depth=1, num_heads=2)
    tokens, ids = torch.randn(2, 5, 32), torch.stack([torch.randperm(16)[:4] for _ in range(2)])
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = decoder(tokens, ids)
    assert out.dtype == torch.bfloat16 and out.shape == (2, 16, 8 * 8 * 3)
    torch.testing.assert_close(out.float(), decoder(tokens, ids), atol=0.05, rtol=0.05)


@pytest.mark.parametrize('variant', list(PRETRAIN_VARIANTS))
def test_pretraining_trains_under_bf16(data_root, variant):
    from mixedae.registry import DATASETS, MODELS
    cfg = Config.fromfile(PRETRAIN)
    cfg.merge_from_dict(dict(model=PRETRAIN_VARIANTS[variant]))
    cfg.train_dataloader.dataset.data_root = data_root['pretrain']
    model, batch = build(cfg, 'mixedae', MODELS, DATASETS, 8)
    check_bf16_against_fp32(cfg, model, batch, 'mixedae', rtol=0.01)


@pytest.mark.parametrize('variant', list(PRETRAIN_VARIANTS))
def test_pretraining_under_fp16_autocast(variant):
    """fp16, the other GPU dtype, through torch's autocast on CPU (the wrapper refuses fp16
    on CPU): the same losses as fp32 and finite gradients."""
    from mixedae.registry import MODELS
    cfg = Config.fromfile(PRETRAIN)
    cfg.merge_from_dict(dict(model=PRETRAIN_VARIANTS[variant]))
    model = MODELS.build(cfg.model)
    images = torch.randn(8, 3, 32, 32)
    torch.manual_seed(0)
    fp32 = model.loss(images)
    torch.manual_seed(0)
    with torch.autocast('cpu', dtype=torch.float16):
        fp16 = model.loss(images)
    assert fp16.keys() == fp32.keys()
    for key in fp32:
        assert fp16[key].item() == pytest.approx(fp32[key].item(), rel=0.01), key
    sum(v for k, v in fp16.items() if k.startswith('loss')).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.slow
@pytest.mark.parametrize('config', [ADE, PROBE], ids=['upernet', 'linear_probe'])
def test_ade20k_models_train_under_bf16(data_root, config):
    from mmseg.registry import DATASETS, MODELS
    cfg = Config.fromfile(config)
    cfg.train_dataloader.dataset.data_root = data_root['ade20k']
    model, batch = build(cfg, 'mmseg', MODELS, DATASETS, 2)
    check_bf16_against_fp32(cfg, model, batch, 'mmseg', rtol=0.02)


@pytest.mark.slow
@pytest.mark.parametrize('protocol', list(COCO))
def test_mask_rcnn_trains_under_bf16(data_root, protocol):
    from mmdet.registry import DATASETS, MODELS
    cfg = Config.fromfile(COCO[protocol])
    cfg.train_dataloader.dataset.data_root = data_root['coco'] + '/'
    model, batch = build(cfg, 'mmdet', MODELS, DATASETS, 2)
    check_bf16_against_fp32(cfg, model, batch, 'mmdet', rtol=0.05)


def sgd_wrapper(**kw) -> AmpOptimWrapper:
    return AmpOptimWrapper(optimizer=torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1),
                           **kw)


def test_cpu_amp_optim_wrapper_is_bf16_and_refuses_fp16():
    wrapper = sgd_wrapper()
    assert wrapper.cast_dtype == torch.bfloat16 and not wrapper.loss_scaler.is_enabled()
    layer = torch.nn.Linear(3, 3)
    with wrapper.optim_context(layer):
        assert layer(torch.randn(1, 3)).dtype == torch.bfloat16
    with pytest.raises(ValueError, match='fp16 autocast needs a GPU'):
        sgd_wrapper(dtype='float16')
    with pytest.raises(ValueError, match="dtype must be one of .* got 'float32'"):
        sgd_wrapper(dtype='float32')
    with pytest.raises(ValueError, match='bf16 needs no loss scaling'):
        sgd_wrapper(loss_scale='dynamic')


def test_first_step_logs_the_autocast_state_it_measured(monkeypatch):
    """The line reports read: logged once, from inside the context, with what autocast does
    there (a wrapper whose context autocasts nothing says so)."""
    wrapper, layer, logged = sgd_wrapper(), torch.nn.Linear(3, 3), []
    monkeypatch.setattr(amp_optim_wrapper, 'print_log', lambda msg, **kw: logged.append(msg))
    for _ in range(2):
        with wrapper.optim_context(layer):
            pass
    assert logged == [f'{AUTOCAST_LOG} bfloat16 autocast on cpu']
    wrapper = sgd_wrapper()
    logged.clear()
    monkeypatch.setattr(amp_optim_wrapper.MMEngineAmpOptimWrapper, 'optim_context',
                        lambda self, model: contextlib.nullcontext())
    with wrapper.optim_context(layer):
        pass
    assert logged == [f'{AUTOCAST_LOG} no autocast (fp32) on cpu']


def test_cpu_amp_optim_wrapper_state_round_trips():
    model = torch.nn.Linear(4, 2)
    wrapper = AmpOptimWrapper(optimizer=torch.optim.AdamW(model.parameters(), lr=0.1))
    with wrapper.optim_context(model):
        loss = model(torch.randn(8, 4)).square().mean()
    wrapper.update_params(loss)
    state = wrapper.state_dict()
    assert 'loss_scaler' in state and state['state']          # AdamW moments after a step
    fresh = AmpOptimWrapper(optimizer=torch.optim.AdamW(model.parameters(), lr=0.1))
    fresh.load_state_dict(copy.deepcopy(state))
    torch.testing.assert_close(fresh.optimizer.state_dict(), wrapper.optimizer.state_dict())


def test_train_tool_amp_on_cpu_means_bf16(capsys):
    train = load_tool('train')
    cfg = train.build_config(train.parse_args([PRETRAIN, '--amp']))
    assert cfg.optim_wrapper.type == 'mixedae.AmpOptimWrapper'
    assert cfg.optim_wrapper.dtype == 'bfloat16'
    assert '--amp: no GPU visible, so bf16 autocast on CPU' in capsys.readouterr().out
    with pytest.raises(ValueError, match='fp16 autocast needs a GPU'):
        train.build_config(train.parse_args([PRETRAIN, '--amp-dtype', 'float16']))  # --amp
    assert train.build_config(train.parse_args([PRETRAIN])).optim_wrapper.type == 'OptimWrapper'
    sgd = train.parse_args([PRETRAIN, '--amp', '--cfg-options', 'optim_wrapper.type=Lion'])
    with pytest.raises(ValueError, match="--amp needs optim_wrapper.type in .* got 'Lion'"):
        train.build_config(sgd)


@pytest.mark.slow
def test_train_tool_amp_runs_and_resumes_on_cpu(data_root, tmp_path):
    """The README's one-machine command on CPU: the Runner trains through the AMP wrapper,
    whose state (loss scaler included) is checkpointed and resumed."""
    import subprocess
    import sys
    from mixedae.utils.checkpoint import load_checkpoint_file
    work = tmp_path / 'work'

    def run(epochs, *extra):
        return subprocess.run(
            [sys.executable, 'tools/train.py', PRETRAIN, '--amp', '--work-dir', str(work),
             *extra, '--cfg-options', f'train_dataloader.dataset.data_root={data_root["pretrain"]}',
             'train_dataloader.batch_size=8', f'train_cfg.max_epochs={epochs}'],
            capture_output=True, text=True, cwd=ROOT)
    out = run(2)                                   # 1 warm-up epoch, then the cosine
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'bf16 autocast on CPU' in out.stdout
    assert 'loss_scaler' in load_checkpoint_file(work / 'epoch_2.pth')['optimizer']
    out = run(3, '--resume')
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'resumed epoch: 2' in out.stdout + out.stderr
    assert (work / 'epoch_3.pth').exists()


def full_and_tiny_configs():
    paths = []
    for folder, _, files in os.walk(os.path.join(ROOT, 'configs')):
        if '_base_' not in folder:
            paths += [os.path.join(folder, f) for f in files if f.endswith('.py')]
    return sorted(os.path.relpath(p, ROOT) for p in paths)


@pytest.mark.parametrize('path', full_and_tiny_configs())
def test_full_scale_configs_use_amp_and_tiny_ones_do_not(path):
    cfg = Config.fromfile(os.path.join(ROOT, path))
    tiny = 'tiny' in os.path.basename(path)
    assert cfg.optim_wrapper.type == ('OptimWrapper' if tiny else 'mixedae.AmpOptimWrapper')
    assert cfg.optim_wrapper.get('dtype', 'bfloat16') == 'bfloat16'
    if path.startswith('configs/coco/'):                     # bf16-safe mmcv kernel calls
        assert cfg.model.rpn_head.type == 'mixedae.AmpRPNHead'
        assert {cfg.model.roi_head.bbox_roi_extractor.type,
                cfg.model.roi_head.mask_roi_extractor.type} == {'mixedae.AmpSingleRoIExtractor'}


def test_amp_roi_extractor_pools_fp32_and_matches_mmdet():
    from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
    from mixedae.models.detection import AmpSingleRoIExtractor
    kw = dict(roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
              out_channels=8, featmap_strides=[4, 8])
    feats = (torch.randn(2, 8, 16, 16), torch.randn(2, 8, 8, 8))
    rois = torch.tensor([[0, 1., 2., 30., 40.], [1, 5., 5., 60., 60.], [0, 0., 0., 10., 12.]])
    ours, theirs = AmpSingleRoIExtractor(**kw), SingleRoIExtractor(**kw)
    torch.testing.assert_close(ours(feats, rois), theirs(feats, rois), rtol=0, atol=0)
    half = ours(tuple(f.bfloat16() for f in feats), rois)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, theirs(feats, rois), rtol=0.02, atol=0.02)
