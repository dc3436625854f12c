"""The code's shape: attention as a plug-in, configured once; the decoder from config; one source
for G; registries; one backbone key layout; the package's import graph (floors, no cycle) and
what the library below the suite never does."""
import ast
import glob
import os
import subprocess
import sys
from typing import Dict, List, Mapping, Optional, Set, Tuple

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


#: the pretraining-only modules: homologous attention, its kernel, the mixing and its encoder
PRETRAINING_ONLY = {'mixedae.models.layers.homologous_attention',
                    'mixedae.models.layers.topk_attention', 'mixedae.models.utils.mixing',
                    'mixedae.models.backbones.mixed_vit'}


def test_transfer_vit_has_no_pretraining_path():
    vit = ViT(**TINY)
    assert all(type(b.attn) is Attention for b in vit.blocks)
    # nothing the transfer backbone imports, directly or not, is pretraining code
    graph = import_graph(package_sources())
    reached = reachable(graph, 'mixedae.models.backbones.vit')
    assert 'mixedae.models.layers.attention' in reached
    assert not reached & PRETRAINING_ONLY
    assert 'mixedae.models.layers.homologous_attention' in reachable(
        graph, 'mixedae.models.backbones.mixed_vit')


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


@pytest.mark.parametrize('kwargs,attention_kwargs,message', [
    (dict(attn_mode='sparse'), dict(mode='sparse'), "unknown attention mode 'sparse'"),
    (dict(attn_impl='fast'), dict(impl='fast'), "unknown attention impl 'fast'"),
    (dict(topk=0), None, 'topk must be in [1, 20] (tokens of a mixed sequence), got 0'),
    (dict(topk=21), None, 'got 21'),
    (dict(homologous_layers=[]), None, 'homologous_layers is empty'),
])
def test_each_attention_argument_is_checked_in_one_place(kwargs, attention_kwargs, message):
    with pytest.raises(ValueError) as err:
        MixedViT(**TINY, group_size=4, **kwargs)
    assert message in str(err.value)
    if attention_kwargs is not None:
        # the encoder passes the argument on: its refusal is the attention layer's own
        with pytest.raises(ValueError) as own:
            HomologousAttention(32, 4, **attention_kwargs)
        assert str(err.value) == str(own.value)


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


# ---------------------------------------------------------------------- the import graph
PACKAGE = os.path.join(ROOT, 'mixedae')
#: the package's floors from the ground up: a module imports its own floor and those below
FLOORS: Tuple[Tuple[str, ...], ...] = (
    ('mixedae.utils', 'mixedae.registry'),
    ('mixedae.models', 'mixedae.datasets'),
    ('mixedae.engine',),
    ('mixedae.apis',),
    ('mixedae.suite',),
)
#: ``mixedae/__init__.py`` imports models, datasets and engine to register them: engine's floor
ROOT_FLOOR = 2

Graph = Dict[str, Set[str]]


def module_name(path: str) -> str:
    rel = os.path.relpath(path, ROOT)[:-len('.py')].replace(os.sep, '.')
    return rel[:-len('.__init__')] if rel.endswith('.__init__') else rel


def package_sources() -> Dict[str, Tuple[str, bool]]:
    """module name -> (source, is a package's ``__init__``) of every module of ``mixedae/``."""
    sources = {}
    for path in glob.glob(os.path.join(PACKAGE, '**', '*.py'), recursive=True):
        with open(path) as f:
            sources[module_name(path)] = (f.read(), path.endswith('__init__.py'))
    return sources


def imported_names(tree: ast.AST, module: str, is_package: bool) -> List[str]:
    """Absolute names of every import of a module, wherever it stands (``if TYPE_CHECKING:``,
    inside functions): ``import a.b`` gives a.b, ``from a import b`` gives a.b."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                parts = module.split('.')[:len(module.split('.')) - node.level + is_package]
                base = '.'.join(parts + ([base] if base else []))
            names += [f'{base}.{alias.name}' for alias in node.names]
    return names


def import_graph(sources: Mapping[str, Tuple[str, bool]]) -> Graph:
    """module -> the modules of ``sources`` it imports. A name is its longest prefix that is a
    module (``from mixedae.models import ViT`` -> mixedae.models, ``from mixedae.utils import
    io`` -> mixedae.utils.io); names outside ``sources`` are left out."""
    def owner(name: str) -> Optional[str]:
        while name and name not in sources:
            name = name.rpartition('.')[0]
        return name or None

    graph = {}
    for module, (source, is_package) in sources.items():
        targets = {owner(n) for n in imported_names(ast.parse(source), module, is_package)}
        graph[module] = targets - {None, module}
    return graph


def floor_of(module: str) -> Optional[int]:
    """Index in :data:`FLOORS` of a module's package (None: on no floor)."""
    if module == 'mixedae':
        return ROOT_FLOOR
    for level, packages in enumerate(FLOORS):
        if any(module == p or module.startswith(p + '.') for p in packages):
            return level
    return None


def upward_arrows(graph: Graph) -> List[str]:
    """One line per import of a module on a higher floor, and per module on no floor."""
    found = [f'{m} is on no floor (add its package to FLOORS)' for m in sorted(graph)
             if floor_of(m) is None]
    for module in sorted(graph):
        for target in sorted(graph[module]):
            below, above = floor_of(module), floor_of(target)
            if None not in (below, above) and above > below:
                found.append(f'{module} (floor {below}) imports {target} (floor {above})')
    return found


def find_cycle(graph: Graph) -> Optional[List[str]]:
    """A circle of imports, ``[a, b, ..., a]``, or None (depth-first, modules in name order)."""
    done: Set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path, on_path = [start], {start}
        stack = [iter(sorted(graph.get(start, ())))]
        while stack:
            target = next(stack[-1], None)
            if target is None:
                stack.pop()
                done.add(path[-1])
                on_path.discard(path.pop())
            elif target in on_path:
                return path[path.index(target):] + [target]
            elif target not in done:
                path.append(target)
                on_path.add(target)
                stack.append(iter(sorted(graph.get(target, ()))))
    return None


def reachable(graph: Graph, start: str) -> Set[str]:
    """Every module ``start`` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        for target in graph.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def without(graph: Graph, edges: Set[Tuple[str, str]]) -> Graph:
    return {m: {t for t in targets if (m, t) not in edges} for m, targets in graph.items()}


SYNTHETIC = {
    'mixedae': ('from . import models', True),
    'mixedae.utils': ('', True),
    'mixedae.utils.io': ('def f():\n    from mixedae.apis.args import parse\n', False),
    'mixedae.models': ('from .vit import ViT', True),
    'mixedae.models.vit': ('from typing import TYPE_CHECKING\nfrom ..utils import io\n'
                           'if TYPE_CHECKING:\n    from mixedae.models.loading import x\n', False),
    'mixedae.models.loading': ('import mixedae.models.vit as vit', False),
    'mixedae.apis': ('', True),
    'mixedae.apis.args': ('import argparse', False),
    'mixedae.apis.config': ('from mixedae.models import ViT\nimport torch', False),
    'mixedae.tools': ('', True),
}


def test_the_graph_counts_type_only_and_function_level_imports():
    graph = import_graph(SYNTHETIC)
    assert graph['mixedae'] == {'mixedae.models'}
    assert graph['mixedae.models'] == {'mixedae.models.vit'}
    assert graph['mixedae.models.vit'] == {'mixedae.utils.io', 'mixedae.models.loading'}
    assert graph['mixedae.utils.io'] == {'mixedae.apis.args'}         # inside a function
    assert graph['mixedae.apis.config'] == {'mixedae.models'}           # torch left out


def test_the_checks_find_an_upward_arrow_a_module_on_no_floor_and_a_cycle():
    graph = import_graph(SYNTHETIC)
    assert upward_arrows(graph) == [
        'mixedae.tools is on no floor (add its package to FLOORS)',
        'mixedae.utils.io (floor 0) imports mixedae.apis.args (floor 3)']
    # the type-only import closes the circle
    assert find_cycle(graph) == ['mixedae.models.vit', 'mixedae.models.loading',
                                 'mixedae.models.vit']
    assert find_cycle(without(graph, {('mixedae.models.vit', 'mixedae.models.loading')})) is None
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'d', 'b'}, 'd': set()}) == ['b', 'c', 'b']
    assert find_cycle({'a': {'b', 'c'}, 'b': {'c'}, 'c': set()}) is None     # a diamond


def test_no_import_points_up_a_floor():
    graph = import_graph(package_sources())
    assert {'mixedae.apis.config', 'mixedae.suite.results', 'mixedae.utils.io'} <= set(graph)
    assert 'mixedae.datasets.synthetic' in graph['mixedae.apis.inputs']
    assert upward_arrows(graph) == []


def test_the_import_graph_has_no_cycle_counting_type_only_imports():
    cycle = find_cycle(import_graph(package_sources()))
    assert cycle is None, 'import cycle: ' + ' -> '.join(cycle)


# ---------------------------------------------------------------------- the library floor
#: the suite: applications over the library, which the library never imports (the floors)
NOT_LIBRARY = ('mixedae.suite',)
PROCESS_CALLS = {('os', name) for name in ('system', 'popen', 'execv', 'execvp', 'spawnv',
                                           'posix_spawn', 'fork')}
REPOSITORY_PATHS = ('configs/', 'tools/', 'docs/', 'README')


def library_modules() -> List[str]:
    paths = glob.glob(os.path.join(PACKAGE, '**', '*.py'), recursive=True)
    return sorted(p for p in paths if not module_name(p).startswith(NOT_LIBRARY))


def floor_violations(source: str) -> List[str]:
    """What a library module must not do: run a process or open the repository's paths."""
    tree = ast.parse(source)
    found = [f'imports {name}' for name in imported_names(tree, 'mixedae.x', False)
             if name.split('.')[0] in ('subprocess', 'multiprocessing')]
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


@pytest.mark.parametrize('source,expected', [
    ('import subprocess', 'imports subprocess'),
    ('from multiprocessing import Pool', 'imports multiprocessing.Pool'),
    ('import os\nos.system("ls")', 'runs a process (os.system)'),
    ('p = __file__', 'uses __file__'),
    ('open("configs/x.py")', "opens 'configs/x.py'"),
])
def test_the_floor_check_finds_each_kind_of_violation(source, expected):
    assert any(expected in v for v in floor_violations(source))


def test_the_library_floor_stands_on_its_own():
    modules = library_modules()
    assert os.path.join(PACKAGE, 'models', 'backbones', 'vit.py') in modules
    assert os.path.join(PACKAGE, 'apis', 'config.py') in modules
    assert not any(module_name(p).startswith('mixedae.suite') for p in modules)
    problems = {}
    for path in modules:
        with open(path) as f:
            found = floor_violations(f.read())
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
