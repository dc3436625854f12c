"""The code's shape: attention as a plug-in, the decoder from config, one source for G, registries."""
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.runner import Runner
from PIL import Image

import mixedae.registry as registry
from mixedae.models import MixedAE, MixedViT, ViT
from mixedae.models.layers.attention import Attention
from mixedae.models.layers.homologous_attention import HomologousAttention, MixingContext
from mixedae.registry import MODELS
from support import ROOT, TINY

TINY_CFG = os.path.join(ROOT, 'configs/pretrain/mixedae_vit-tiny-p8_1xb16-coslr-4e_tiny-32.py')


def test_transfer_vit_has_no_pretraining_path():
    vit = ViT(**TINY)
    assert all(type(b.attn) is Attention for b in vit.blocks)
    source = open(os.path.join(ROOT, 'mixedae/models/backbones/vit.py')).read()
    assert 'homologous' not in source.lower() and 'mixing' not in source.lower()


def test_mixed_vit_installs_homologous_attention_per_layer():
    enc = MixedViT(**TINY, group_size=4, attn_mode='topk', homologous_layers=[1], topk=7)
    modes = [(type(b.attn), b.attn.mode, b.attn.topk) for b in enc.blocks]
    assert modes[0][:2] == (HomologousAttention, 'vanilla')
    assert modes[1] == (HomologousAttention, 'topk', 7)
    # same parameters as the transfer attention: weights move with prefix changes only
    assert set(enc.blocks[0].attn.state_dict()) == set(ViT(**TINY).blocks[0].attn.state_dict())


def test_homologous_attention_without_context_is_the_transfer_attention():
    torch.manual_seed(0)
    plain = Attention(32, 4).eval()
    homologous = HomologousAttention(32, 4, mode='topk', topk=2).eval()
    homologous.load_state_dict(plain.state_dict())
    x = torch.randn(2, 9, 32)
    torch.testing.assert_close(homologous(x), plain(x))
    # with a context, topk mode differs from plain attention and records hr_acc
    context = MixingContext(torch.tensor([[0, 0, 0, 1, 1, 1, 2, 2, 2]] * 2))
    assert not torch.allclose(homologous(x, context=context), plain(x))
    assert len(context.precisions) == 1 and 0 <= context.precisions[0] <= 1


class TinyDecoder(nn.Module):
    """A decoder given by config: predicts every patch from the mean visible token."""

    def __init__(self, num_patches, grid, patch_size, embed_dim, in_chans=3, scale=1.0):
        super().__init__()
        self.num_patches, self.scale = num_patches, scale
        self.pred = nn.Linear(embed_dim, patch_size ** 2 * in_chans)

    def forward(self, tokens, visible_ids):
        out = self.pred(tokens.mean(1, keepdim=True)) * self.scale
        return out.expand(-1, self.num_patches, -1)


def test_mixedae_takes_its_decoder_from_config():
    MODELS.register_module(module=TinyDecoder, force=True)
    try:
        model = MixedAE(backbone=dict(type='mixedae.MixedViT', **TINY, group_size=4),
                        decoder=dict(type='mixedae.TinyDecoder', scale=0.5))
    finally:
        MODELS._module_dict.pop('TinyDecoder')
    assert type(model.decoder) is TinyDecoder and model.decoder.scale == 0.5
    assert model.decoder.num_patches == 16                 # filled in from the backbone
    assert model.decoder.pred.in_features == TINY['embed_dim']
    losses = model.loss(torch.randn(8, 3, 32, 32))
    assert torch.isfinite(losses['loss_rec'])


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(10):                        # batches of 8 leave a last one of 2
        Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(
            tmp_path / f'{i:02d}.png')
    return tmp_path


def tiny_runner(tmp_path, images, **options):
    cfg = Config.fromfile(TINY_CFG)
    cfg.merge_from_dict({'train_dataloader.dataset.data_root': str(images),
                         'work_dir': str(tmp_path / 'work'), **options})
    return Runner.from_cfg(cfg)


def test_mismatched_group_size_fails_before_the_first_batch(tmp_path, images, monkeypatch):
    runner = tiny_runner(tmp_path, images, **{'train_dataloader.batch_size': 6})
    seen = []
    monkeypatch.setattr(runner.model, 'train_step', lambda *a, **k: seen.append(1))
    with pytest.raises(ValueError) as err:
        runner.train()
    assert 'train_dataloader.batch_size=6' in str(err.value)
    assert 'model.backbone.group_size=4' in str(err.value)
    assert not seen


def test_a_ragged_last_batch_is_refused_without_drop_last(tmp_path, images):
    runner = tiny_runner(tmp_path, images, **{'train_dataloader.batch_size': 8,
                                              'train_dataloader.drop_last': False,
                                              'model.backbone.group_size': 4})
    with pytest.raises(ValueError, match='train_dataloader.drop_last=True'):
        runner.train()


def registry_samples(tmp_path):
    """One cheap config per registry declared in mixedae.registry (built under its scope)."""
    param = nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([param], lr=0.1)
    for i in range(2):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / f'{i}.png')
    return dict(
        MODELS=dict(type='ViT', **TINY),
        OPTIM_WRAPPER_CONSTRUCTORS=dict(
            type='LayerDecayOptimWrapperConstructor',
            optim_wrapper_cfg=dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3)),
            paramwise_cfg=dict(layer_decay_rate=0.65)),
        HOOKS=dict(type='MixingBatchCheckHook'),
        DATASETS=dict(type='ImageFolder', data_root=str(tmp_path), pipeline=[]),
        DATA_SAMPLERS=dict(type='DefaultSampler', dataset=[0, 1, 2, 3]),
        TRANSFORMS=dict(type='LoadRGBImage'),
        METRICS=dict(type='DumpResults', out_file_path=str(tmp_path / 'x.pkl')),
        RUNNERS=None, LOOPS=None, MODEL_WRAPPERS=None,       # need a whole run: resolved by name
        FUNCTIONS=None,                                      # functions are called, not built
        WEIGHT_INITIALIZERS=dict(type='Constant', val=0.),
        OPTIMIZERS=dict(type='AdamW', params=[param], lr=1e-3),
        OPTIM_WRAPPERS=dict(type='OptimWrapper', optimizer=optimizer),
        PARAM_SCHEDULERS=dict(type='ConstantLR', optimizer=optimizer),
        EVALUATOR=dict(type='Evaluator', metrics=[]),
        VISUALIZERS=dict(type='Visualizer', name='arch-test'),
        VISBACKENDS=dict(type='LocalVisBackend', save_dir=str(tmp_path / 'vis')),
        LOG_PROCESSORS=dict(type='LogProcessor'))


NAMED_ONLY = dict(RUNNERS='Runner', LOOPS='EpochBasedTrainLoop',
                  MODEL_WRAPPERS='MMDistributedDataParallel', FUNCTIONS='pseudo_collate')


def test_every_declared_registry_builds_under_the_mixedae_scope(tmp_path):
    declared = {name for name, obj in vars(registry).items()
                if isinstance(obj, registry.Registry) and obj.scope == 'mixedae'}
    samples = registry_samples(tmp_path)
    assert declared == set(samples)
    for name in sorted(declared):
        reg = getattr(registry, name)
        reg.import_from_location()                     # a dangling location raises here
        if samples[name] is None:
            assert reg.get(NAMED_ONLY[name]) is not None, name
        else:
            assert reg.build(samples[name]) is not None, name
