"""Layer-wise learning-rate decay driven by the backbone's ``get_layer_depth``.

One constructor for mmseg and mmdet configs (theirs only accept specific backbone classes):

    optim_wrapper = dict(
        type='OptimWrapper',
        optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
        constructor='mixedae.LayerDecayOptimWrapperConstructor',
        paramwise_cfg=dict(layer_decay_rate=0.65))

Backbone parameter with layer id ``l`` of ``L`` layers gets lr scale ``rate ** (L - 1 - l)``;
parameters outside the backbone (neck, heads) get 1.0. 1-D parameters (biases, norms, layer
scale) and those named in ``no_decay_keys`` get no weight decay.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.optim import DefaultOptimWrapperConstructor

from mixedae.registry import OPTIM_WRAPPER_CONSTRUCTORS

DEFAULT_NO_DECAY_KEYS = ('pos_embed', 'cls_token', 'mask_token', 'relative_position_bias_table',
                         'segment_embed')


def layer_lr_scale(layer_id: int, num_layers: int, rate: float) -> float:
    """lr multiplier of layer ``layer_id`` of ``num_layers``; the last layer gets 1.0."""
    return rate ** (num_layers - 1 - layer_id)


def uses_weight_decay(name: str, param: nn.Parameter, no_decay_keys: Sequence[str]) -> bool:
    """False for 1-D parameters and for names with a component in ``no_decay_keys``."""
    return param.ndim > 1 and not any(part in no_decay_keys for part in name.split('.'))


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Parameter groups by (layer, decay / no decay). ``paramwise_cfg`` keys:

    - ``layer_decay_rate`` (float in (0, 1], required)
    - ``no_decay_keys`` (names without weight decay; default :data:`DEFAULT_NO_DECAY_KEYS`)
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict = None) -> None:
        paramwise_cfg = dict(paramwise_cfg or {})
        unknown = set(paramwise_cfg) - {'layer_decay_rate', 'no_decay_keys'}
        if unknown:
            raise ValueError(f'paramwise_cfg: unknown keys {sorted(unknown)} for '
                             'LayerDecayOptimWrapperConstructor')
        rate = paramwise_cfg.get('layer_decay_rate')
        if not isinstance(rate, (int, float)) or not 0 < rate <= 1:
            raise ValueError(f'paramwise_cfg.layer_decay_rate must be in (0, 1], got {rate!r}')
        self.layer_decay_rate = float(rate)
        self.no_decay_keys = tuple(paramwise_cfg.get('no_decay_keys', DEFAULT_NO_DECAY_KEYS))
        # a non-empty paramwise_cfg makes the parent's __call__ route through add_params.
        super().__init__(optim_wrapper_cfg, paramwise_cfg)

    def __call__(self, model: nn.Module):
        """The parent's optim wrapper, with the parameter groups as plain dicts: building the
        optimizer from a config turns them into ``ConfigDict`` s, which ``torch.compile`` cannot
        trace through the optimizer step (``--compile``)."""
        wrapper = super().__call__(model)
        groups = wrapper.optimizer.param_groups
        groups[:] = [dict(group) for group in groups]
        return wrapper

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '',
                   **kwargs) -> None:
        if is_model_wrapper(module):
            module = module.module
        backbone = getattr(module, 'backbone', None)
        if backbone is None or not hasattr(backbone, 'get_layer_depth'):
            raise ValueError('LayerDecayOptimWrapperConstructor needs model.backbone with a '
                             f'get_layer_depth() method; got {type(backbone).__name__}')
        base_lr = self.base_lr if self.base_lr is not None else 0.
        base_wd = self.base_wd if self.base_wd is not None else 0.
        groups: Dict[Tuple[str, bool], dict] = {}
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            if name.startswith('backbone.'):
                layer_id, num_layers = backbone.get_layer_depth(name, prefix='backbone.')
                group = f'backbone_layer_{layer_id}'
                scale = layer_lr_scale(layer_id, num_layers, self.layer_decay_rate)
            else:
                group, scale = 'non_backbone', 1.0
            decay = uses_weight_decay(name, param, self.no_decay_keys)
            key = (group, decay)
            if key not in groups:
                groups[key] = dict(params=[], param_names=[], lr_scale=scale,
                                   lr=base_lr * scale, weight_decay=base_wd if decay else 0.,
                                   group_name=f'{group}_{"decay" if decay else "no_decay"}')
            groups[key]['params'].append(param)
            groups[key]['param_names'].append(name)
        params.extend(groups.values())
        print_log(format_param_groups(list(groups.values())), logger='current')


def format_param_groups(groups: List[dict]) -> str:
    """A text table of parameter groups: name, tensors, elements, lr scale, lr, weight decay."""
    header = f'{"group":<34}{"tensors":>8}{"params":>12}{"lr_scale":>11}{"lr":>12}{"wd":>8}'
    lines = ['Layer-wise lr decay parameter groups:', header, '-' * len(header)]
    for g in sorted(groups, key=lambda g: (g['lr_scale'], g['group_name'])):
        numel = sum(p.numel() for p in g['params'])
        lines.append(f'{g["group_name"]:<34}{len(g["params"]):>8}{numel:>12}'
                     f'{g["lr_scale"]:>11.4g}{g["lr"]:>12.4g}{g["weight_decay"]:>8.3g}')
    return '\n'.join(lines)
