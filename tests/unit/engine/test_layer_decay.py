"""Layer-wise lr decay: the lr scale and weight decay of every parameter of a toy model."""
import pytest
import torch.nn as nn
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper

import mixedae  # noqa: F401
from mixedae.engine.optimizers.layer_decay_constructor import (
    LayerDecayOptimWrapperConstructor, format_param_groups)
from mixedae.models import ViT
from support import TINY


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = ViT(**TINY, use_rel_pos_bias=True, init_values=0.1)
        self.neck = nn.Conv2d(32, 16, 1)
        self.head = nn.Linear(16, 3)


def expected(name, param, rate=0.5, depth=2, base_lr=1.0, wd=0.05):
    """Independent statement of the rule: (lr, weight decay) of one parameter."""
    if name.startswith('backbone.'):
        short = name[len('backbone.'):]
        if short in ('cls_token', 'pos_embed') or short.startswith('patch_embed.'):
            layer = 0
        elif short.startswith('blocks.'):
            layer = int(short.split('.')[1]) + 1
        else:
            layer = depth + 1
        lr = base_lr * rate ** (depth + 1 - layer)
    else:
        lr = base_lr
    no_wd = (param.ndim == 1 or name.endswith(('cls_token', 'pos_embed'))
             or 'relative_position_bias_table' in name)
    return lr, 0.0 if no_wd else wd


def build(model, **paramwise):
    cfg = dict(type='OptimWrapper',
               optimizer=dict(type='AdamW', lr=1.0, weight_decay=0.05),
               constructor='mixedae.LayerDecayOptimWrapperConstructor',
               paramwise_cfg=dict(dict(layer_decay_rate=0.5), **paramwise))
    return build_optim_wrapper(model, cfg)


def test_every_parameter_gets_its_scale_and_decay():
    model = Toy()
    wrapper = build(model)
    where = {}
    for group in wrapper.optimizer.param_groups:
        for p in group['params']:
            assert id(p) not in where, 'a parameter is in two groups'
            where[id(p)] = (group['lr'], group['weight_decay'])
    named = dict(model.named_parameters())
    assert len(where) == len(named)
    for name, param in named.items():
        lr, wd = where[id(param)]
        exp_lr, exp_wd = expected(name, param)
        assert lr == pytest.approx(exp_lr), name
        assert wd == exp_wd, name
    # spot checks of the rule in numbers (depth 2 -> 4 layers, rate 0.5)
    by_name = {n: where[id(p)] for n, p in named.items()}
    assert by_name['backbone.patch_embed.proj.weight'] == (0.125, 0.05)
    assert by_name['backbone.pos_embed'] == (0.125, 0.0)
    assert by_name['backbone.blocks.0.attn.qkv.weight'] == (0.25, 0.05)
    assert by_name['backbone.blocks.1.attn.relative_position_bias_table'] == (0.5, 0.0)
    assert by_name['backbone.blocks.1.ls1.gamma'] == (0.5, 0.0)
    assert by_name['backbone.norm.weight'] == (1.0, 0.0)
    assert by_name['head.weight'] == (1.0, 0.05)
    assert by_name['neck.bias'] == (1.0, 0.0)


def test_frozen_parameters_are_left_out():
    model = Toy()
    model.backbone.patch_embed.requires_grad_(False)
    wrapper = build(model)
    grouped = {id(p) for g in wrapper.optimizer.param_groups for p in g['params']}
    assert id(model.backbone.patch_embed.proj.weight) not in grouped
    # the parameters after the frozen ones are all still there, with their names
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert len(grouped) == len(named)
    for group in wrapper.optimizer.param_groups:
        assert [id(p) for p in group['params']] == [id(named[n]) for n in group['param_names']]


def test_group_table_is_logged(tmp_path):
    log_file = tmp_path / 'log.txt'
    # one logger per run: a second pytest session in the same process (mutmut) gets its own file
    MMLogger.get_instance(f'mixedae_test_layer_decay:{log_file}', log_file=str(log_file))
    wrapper = build(Toy())
    table = format_param_groups(wrapper.optimizer.param_groups)
    assert table in log_file.read_text()
    assert 'backbone_layer_0_decay' in table and 'non_backbone_no_decay' in table
    lines = table.split('\n')
    assert len(lines) == 3 + len(wrapper.optimizer.param_groups)
    assert lines[0] == 'Layer-wise lr decay parameter groups:'
    assert lines[1].split() == ['group', 'tensors', 'params', 'lr_scale', 'lr', 'wd']
    assert lines[2] == '-' * len(lines[1]) == '-' * 85


def test_optimizer_without_weight_decay_gets_none():
    model = Toy()
    wrapper = build_optim_wrapper(model, dict(
        type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1),
        constructor='mixedae.LayerDecayOptimWrapperConstructor',
        paramwise_cfg=dict(layer_decay_rate=0.5)))
    assert all(g['weight_decay'] == 0.0 for g in wrapper.optimizer.param_groups)
    lr = {id(p): g['lr'] for g in wrapper.optimizer.param_groups for p in g['params']}
    assert lr[id(model.backbone.norm.weight)] == pytest.approx(0.1)
    assert lr[id(model.backbone.pos_embed)] == pytest.approx(0.1 * 0.5 ** 3)


@pytest.mark.parametrize('bad', [0, 1.5, None, 'x'])
def test_bad_rate_is_rejected(bad):
    with pytest.raises(ValueError, match='layer_decay_rate'):
        build_optim_wrapper(Toy(), dict(
            optimizer=dict(type='AdamW', lr=1.0),
            constructor='mixedae.LayerDecayOptimWrapperConstructor',
            paramwise_cfg=dict(layer_decay_rate=bad)))


def test_rate_one_and_own_no_decay_keys_are_accepted():
    model = Toy()
    wrapper = build(model, layer_decay_rate=1.0, no_decay_keys=('qkv',))
    lr_wd = {id(p): (g['lr'], g['weight_decay'])
             for g in wrapper.optimizer.param_groups for p in g['params']}
    assert lr_wd[id(model.backbone.patch_embed.proj.weight)] == (1.0, 0.05)   # rate 1: no decay
    assert lr_wd[id(model.backbone.blocks[0].attn.qkv.weight)] == (1.0, 0.0)  # named: no wd
    assert lr_wd[id(model.backbone.pos_embed)] == (1.0, 0.05)   # no longer in the no-wd list


def test_unknown_key_and_missing_backbone_are_rejected():
    with pytest.raises(ValueError, match=r"paramwise_cfg: unknown keys \['custom_keys'\] for "
                                         r'LayerDecayOptimWrapperConstructor'):
        build(Toy(), custom_keys={})
    with pytest.raises(ValueError, match=r'LayerDecayOptimWrapperConstructor needs '
                                         r'model.backbone with a get_layer_depth\(\) method; '
                                         r'got NoneType'):
        build(nn.Sequential(nn.Linear(2, 2)))
    plain = nn.Module()
    plain.backbone = nn.Linear(2, 2)                    # a backbone without get_layer_depth
    with pytest.raises(ValueError, match='got Linear'):
        build(plain)


def test_param_groups_are_plain_dicts_the_compiled_step_can_trace():
    """MMEngine's config-based build turns the groups into ConfigDicts, which torch.compile
    fails on in the optimizer step (--compile); the constructor hands back plain dicts."""
    wrapper = build(Toy())
    assert all(type(group) is dict for group in wrapper.optimizer.param_groups)


def groups_of(wrapper):
    return [(g['group_name'], g['lr'], g['weight_decay'], len(g['params']))
            for g in wrapper.optimizer.param_groups]


def test_a_ddp_wrapped_model_gets_the_groups_of_the_model():
    from mmengine.model import MMDistributedDataParallel
    model = Toy()
    wrapped = MMDistributedDataParallel.__new__(MMDistributedDataParallel)
    nn.Module.__init__(wrapped)
    wrapped.module = model
    assert groups_of(build(wrapped)) == groups_of(build(model))
    direct = LayerDecayOptimWrapperConstructor(
        dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1.0, weight_decay=0.05)),
        dict(layer_decay_rate=0.5))
    from_wrapper, from_model = [], []          # add_params called directly, not by MMEngine
    direct.add_params(from_wrapper, wrapped)
    direct.add_params(from_model, model)
    assert [(g['group_name'], len(g['params'])) for g in from_wrapper] == [
        (g['group_name'], len(g['params'])) for g in from_model]


def test_an_optimizer_without_lr_gets_zero_lr_groups():
    cfg = dict(type='OptimWrapper', optimizer=dict(type='SGD', weight_decay=0.05),
               constructor='mixedae.LayerDecayOptimWrapperConstructor',
               paramwise_cfg=dict(layer_decay_rate=0.5))
    groups = build_optim_wrapper(Toy(), cfg).optimizer.param_groups
    assert len(groups) > 2 and all(g['lr'] == 0. for g in groups)
    assert {g['lr_scale'] for g in groups} == {0.125, 0.25, 0.5, 1.0}
