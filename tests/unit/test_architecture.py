"""The code's shape: attention as a plug-in, configured once; the decoder from config; one source
for G; registries; one backbone key layout; the library floor's import graph."""
import ast
import glob
import os
import subprocess
import sys
from typing import List

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.runner import Runner
from PIL import Image

import mixedae.registry as registry
from mixedae.models import MixedAE, MixedViT, ViT
from mixedae.models.backbones import mixed_vit
from mixedae.models.backbones.checkpoint_layouts import BACKBONE_KEY, OPTIONAL_KEY
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


class RecordingAttention(HomologousAttention):
    """Remembers the arguments it was built with."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.built_with = (self.mode, self.topk, self.impl)


def test_mixed_vit_builds_each_attention_with_its_final_arguments(monkeypatch):
    monkeypatch.setattr(mixed_vit, 'HomologousAttention', RecordingAttention)
    enc = MixedViT(**{**TINY, 'depth': 4}, group_size=4, attn_mode='oracle',
                   homologous_layers='last_half', topk=9, attn_impl='reference')
    assert enc.homologous_layers == (2, 3)
    for i, block in enumerate(enc.blocks):
        mode = 'oracle' if i in (2, 3) else 'vanilla'           # the rest see the whole mix
        assert block.attn.built_with == (block.attn.mode, block.attn.topk, block.attn.impl)
        assert block.attn.built_with == (mode, 9, 'reference'), i


@pytest.mark.parametrize('kwargs,message,place', [
    (dict(attn_mode='sparse'), "unknown attention mode 'sparse'", 'homologous_attention.py'),
    (dict(attn_impl='fast'), "unknown attention impl 'fast'", 'homologous_attention.py'),
    (dict(topk=0), 'topk must be in [1, 20] (tokens of a mixed sequence), got 0', 'mixed_vit.py'),
    (dict(topk=21), 'got 21', 'mixed_vit.py'),
    (dict(homologous_layers=[]), 'homologous_layers is empty', 'mixed_vit.py'),
])
def test_each_attention_argument_is_checked_in_one_place(kwargs, message, place):
    with pytest.raises(ValueError) as err:
        MixedViT(**TINY, group_size=4, **kwargs)
    assert message in str(err.value)
    assert os.path.basename(str(err.traceback[-1].path)) == place


def test_the_key_layout_covers_every_backbone_and_marks_what_may_be_absent():
    variants = [dict(), dict(init_values=0.1), dict(use_rel_pos_bias=True),
                dict(use_rel_pos_bias=True, rel_pos_type='decomposed', with_cls_token=False,
                     window_size=2, window_block_indexes=[0])]
    for kw in variants:
        keys = ViT(**TINY, **kw).state_dict()
        assert all(BACKBONE_KEY.match(k) for k in keys), kw
        optional = {k for k in keys if OPTIONAL_KEY.match(k)}
        assert optional == {k for k in keys if '.ls1.' in k or '.ls2.' in k or 'rel' in k}, kw
    assert all(BACKBONE_KEY.match(k) for k in MixedViT(**TINY).state_dict()
               if k != 'segment_embed')


def test_homologous_attention_without_context_is_the_transfer_attention():
    torch.manual_seed(0)
    plain = Attention(32, 4).eval()
    homologous = HomologousAttention(32, 4, mode='topk', topk=2).eval()
    homologous.load_state_dict(plain.state_dict())
    x = torch.randn(2, 9, 32)
    torch.testing.assert_close(homologous(x), plain(x))
    # with a context, topk mode differs from plain attention and records hr_acc
    context = MixingContext(torch.tensor([[0, 0, 0, 1, 1, 1, 2, 2, 2]] * 2), num_prefix=0)
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


# ---------------------------------------------------------------------- the library floor
PACKAGE = os.path.join(ROOT, 'mixedae')
#: the suite: applications over the library, which the library never imports
NOT_LIBRARY = ('mixedae.suite',)
PROCESS_CALLS = {('os', name) for name in ('system', 'popen', 'execv', 'execvp', 'spawnv',
                                           'posix_spawn', 'fork')}
REPOSITORY_PATHS = ('configs/', 'tools/', 'docs/', 'README')


def module_name(path: str) -> str:
    rel = os.path.relpath(path, ROOT)[:-len('.py')].replace(os.sep, '.')
    return rel[:-len('.__init__')] if rel.endswith('.__init__') else rel


def library_modules() -> List[str]:
    paths = glob.glob(os.path.join(PACKAGE, '**', '*.py'), recursive=True)
    return sorted(p for p in paths if not module_name(p).startswith(NOT_LIBRARY))


def imported_names(tree: ast.AST, module: str, is_package: bool) -> List[str]:
    """Absolute names of every import of a module (``from a import b`` gives a and a.b)."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                parts = module.split('.')[:len(module.split('.')) - node.level + is_package]
                base = '.'.join(parts + ([base] if base else []))
            names += [base] + [f'{base}.{alias.name}' for alias in node.names]
    return names


def floor_violations(source: str, module: str, is_package: bool = False) -> List[str]:
    """What a library module must not do: import the suite, run a process, open repo paths."""
    tree = ast.parse(source)
    found = [f'imports {name}' for name in imported_names(tree, module, is_package)
             if name.startswith(NOT_LIBRARY) or name.split('.')[0] in ('subprocess',
                                                                      'multiprocessing')]
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == '__file__':
            found.append(f'line {node.lineno}: uses __file__ (a path of the repository)')
        elif isinstance(node, ast.Call):
            func = node.func
            if (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                    and (func.value.id, func.attr) in PROCESS_CALLS):
                found.append(f'line {node.lineno}: runs a process (os.{func.attr})')
            found += [f'line {node.lineno}: opens {arg.value!r}' for arg in node.args
                      if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
                      and arg.value.startswith(REPOSITORY_PATHS)]
    return found


@pytest.mark.parametrize('source,module,expected', [
    ('from mixedae.suite import demo', 'mixedae.models.vit', 'imports mixedae.suite'),
    ('from mixedae.suite.speed import x', 'mixedae.utils.io', 'imports mixedae.suite.speed'),
    ('from .. import suite', 'mixedae.engine.hook', 'imports mixedae.suite'),
    ('from ..suite import demo', 'mixedae.utils.io', 'imports mixedae.suite.demo'),
    ('import subprocess', 'mixedae.utils.io', 'imports subprocess'),
    ('import os\nos.system("ls")', 'mixedae.utils.io', 'runs a process (os.system)'),
    ('p = __file__', 'mixedae.utils.io', 'uses __file__'),
    ('open("configs/x.py")', 'mixedae.utils.io', "opens 'configs/x.py'"),
])
def test_the_floor_check_finds_each_kind_of_violation(source, module, expected):
    assert any(expected in v for v in floor_violations(source, module))


def test_the_library_floor_stands_on_its_own():
    modules = library_modules()
    assert os.path.join(PACKAGE, 'models', 'backbones', 'vit.py') in modules
    assert not any(module_name(p).startswith('mixedae.suite') for p in modules)
    problems = {}
    for path in modules:
        with open(path) as f:
            found = floor_violations(f.read(), module_name(path), path.endswith('__init__.py'))
        if found:
            problems[os.path.relpath(path, ROOT)] = found
    assert not problems


def test_import_mixedae_leaves_mmdet_mmseg_and_their_adapters_unimported():
    """mmdet's and mmseg's adapters are imported by the transfer configs' ``custom_imports``,
    not by ``import mixedae`` (pretraining needs neither)."""
    optional = ['mmdet', 'mmseg', 'mixedae.models.detection', 'mixedae.datasets.coco',
                'mixedae.datasets.ade20k', 'mixedae.models.segmentation']
    code = f'import sys, mixedae; print([m for m in {optional!r} if m in sys.modules])'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, 'PYTHONPATH': ROOT}, check=True)
    assert out.stdout.strip() == '[]'
