"""Our transfer configs, resolved, against the reference configs installed with mmseg / mmdet:
every field the Runner (or the reference's tools) reads is equal, except a listed, explained set.
The lists here are the ones in docs/protocols.md; a difference that is not listed, or a listed
one that no longer occurs, fails the test.
"""
import inspect
import os
from typing import Any, Dict, Tuple

import mmdet
import mmseg
import pytest
from mmengine.config import Config
from mmseg.models.backbones import MAE
from mmseg.models.necks import Feature2Pyramid

from mixedae.models import ViT
from mixedae.models.layers.block import LayerNorm
from support import ROOT

SEG_REF = os.path.join(os.path.dirname(mmseg.__file__), '.mim/configs/mae',
                       'mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py')
DET_REF = os.path.join(os.path.dirname(mmdet.__file__), '.mim/configs/mask_rcnn',
                       'mask-rcnn_r50_fpn_1x_coco.py')

#: top-level fields read by MMEngine's Runner.from_cfg or by the reference tools (fp16, tta);
#: everything else at the top level is a helper variable of the config files.
RUNNER_KEYS = ('model', 'train_dataloader', 'val_dataloader', 'test_dataloader', 'train_cfg',
               'val_cfg', 'test_cfg', 'optim_wrapper', 'param_scheduler', 'val_evaluator',
               'test_evaluator', 'default_hooks', 'custom_hooks', 'env_cfg', 'log_processor',
               'log_level', 'visualizer', 'default_scope', 'randomness', 'load_from', 'resume',
               'auto_scale_lr', 'custom_imports', 'data_preprocessor', 'fp16', 'tta_model',
               'tta_pipeline')

#: ADE20K: ours (configs/ade20k/upernet_vit-b16-mae_8xb2-160k_ade20k-512x512.py) vs mmseg's MAE
#: config. Backbone settings are compared separately, field by field (test below).
ADE20K_DIFFERENCES = {
    'model.backbone.type': 'mixedae.ViT vs mmseg MAE: same features from the same weights '
                           '(tests/parity/test_ade20k_parity.py); settings compared field by field',
    'model.backbone.init_cfg': 'how the checkpoint is given: ours a converted backbone file',
    'model.pretrained': "mmseg's spelling of the checkpoint (its own converted MAE file)",
    'model.neck.norm_cfg': "ours states Feature2Pyramid's default (SyncBN) explicitly",
    'optim_wrapper.constructor': 'ours mixedae.LayerDecayOptimWrapperConstructor: the same lr '
                                 'and weight decay per parameter (tests/parity/test_ade20k_parity.py)',
    'optim_wrapper.paramwise_cfg': "the two constructors' spellings of the same rule",
    'train_dataloader.dataset.pipeline.1.reduce_zero_label':
        'ADE20KDataset passes reduce_zero_label=True to LoadAnnotations; mmseg also states it '
        '(deprecated argument)',
    'val_dataloader.dataset.pipeline.2.reduce_zero_label': 'as above',
    'test_dataloader.dataset.pipeline.2.reduce_zero_label': 'as above',
    'data_preprocessor': "mmseg's top-level helper; the Runner uses it only when the model "
                         'has none (model.data_preprocessor is equal)',
    'fp16': 'legacy MMCV 1.x key, not read by MMEngine: both train in fp32 unless --amp',
    'default_hooks.checkpoint.max_keep_ckpts': 'bookkeeping (disk), no effect on training',
    'default_hooks.checkpoint.save_best': 'bookkeeping: also keeps the best-mIoU checkpoint',
    'randomness': 'ours seeds 0 (mmseg unseeded)',
    'auto_scale_lr': 'present but disabled (enable=False)',
    'custom_imports': 'imports mixedae',
    'custom_hooks': 'mixedae.NonFiniteGuardHook: stops a run at a non-finite loss (no effect on '
                    "a healthy run); mixedae.BroadcastBuffersHook: rank 0's BN statistics on "
                    'every rank before validation (no effect on training)',
    'optim_wrapper.type': "mixedae.AmpOptimWrapper (bf16 autocast, docs/mixed_precision.md); "
                          "mmseg's config names AMP only through the ignored fp16 key",
    'train_dataloader.dataset.type': "mixedae.ADE20KDataset: mmseg's ADE20KDataset whose sample "
                                     'errors name their files',
    'val_dataloader.dataset.type': 'as above',
    'test_dataloader.dataset.type': 'as above',
    'train_dataloader.dataset.label_check': 'mixedae.CheckSegAnnotation after LoadAnnotations: '
                                            'labels in range and label size = image size',
    'val_dataloader.dataset.label_check': 'as above',
    'test_dataloader.dataset.label_check': 'as above',
    'tta_pipeline.1.transforms.3': 'the label check as one more TestTimeAug step (scales, flips '
                                   "and the rest of tools/test.py --tta's pipeline are mmseg's)",
    'tta_pipeline.1.transforms.4': 'PackSegInputs, one step later',
}

#: COCO protocol A (configs/coco/mask-rcnn_vit-b16-mae_fpn_8xb2-1x_coco.py) vs mmdet's
#: configs/mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py (the same mask-rcnn_r50_fpn model base,
#: coco_instance data, schedule_1x and default_runtime).
COCO_A_DIFFERENCES = {
    'model.backbone': 'ViT-B/16 (protocol A, pretrained checkpoint) instead of ResNet-50',
    'default_hooks.checkpoint.max_keep_ckpts': 'bookkeeping (disk): the last two epochs, not '
                                               'all 12 / 36 (about 1.3 GB each)',
    'model.neck': 'the multi-scale adapter (mmseg Feature2Pyramid: blocks 3, 5, 7, 11 at '
                  'x4, x2, x1, x0.5) before the same FPN, FPN in_channels 768',
    'optim_wrapper.optimizer': 'ViT fine-tuning recipe: AdamW lr 1e-4, betas (0.9, 0.999), '
                               "wd 0.05 (mmdet's SGD 0.02 is for ResNet)",
    'optim_wrapper.constructor': 'layer-wise lr decay (mixedae.LayerDecayOptimWrapperConstructor)',
    'optim_wrapper.paramwise_cfg': 'layer decay 0.75 (chosen: BEiT detection setting)',
    'optim_wrapper.clip_grad': 'None stated explicitly: no clipping in either',
    'train_dataloader.dataset.pipeline.0.backend_args': "None is LoadImageFromFile's default",
    'train_dataloader.dataset.pipeline.2': 'multi-scale training: shorter side 480-800 step 32 '
                                           '(RandomChoiceResize) instead of 1333x800',
    'custom_imports': 'imports mixedae and mmseg.models (the adapter)',
    'custom_hooks': 'mixedae.NonFiniteGuardHook: stops a run at a non-finite loss (no effect on '
                    "a healthy run); mixedae.BroadcastBuffersHook: rank 0's BN statistics on "
                    'every rank before validation (no effect on training)',
    'optim_wrapper.type': 'mixedae.AmpOptimWrapper: bf16 autocast (docs/mixed_precision.md)',
    'model.rpn_head.type': "mixedae.AmpRPNHead: mmdet's RPNHead with the proposal NMS in fp32 "
                           "(mmcv's nms has no bf16 kernel)",
    'model.roi_head.bbox_roi_extractor.type': "mixedae.AmpSingleRoIExtractor: RoIAlign on fp32 "
                                              'maps (no bf16 kernel in mmcv)',
    'model.roi_head.mask_roi_extractor.type': 'as above',
    'train_dataloader.dataset.type': "mixedae.CocoDataset: mmdet's CocoDataset whose errors name "
                                     'the annotation file and sample',
    'val_dataloader.dataset.type': 'as above',
    'test_dataloader.dataset.type': 'as above',
}
#: the 3x configs differ from the 1x ones only in the schedule.
COCO_A_3X_DIFFERENCES = dict(COCO_A_DIFFERENCES, **{
    'train_cfg.max_epochs': '36 epochs (3x)',
    'param_scheduler.1.milestones': 'steps at 27 and 33 (3x)',
    'param_scheduler.1.end': 'the 3x step schedule ends at epoch 36',
})


def flatten(x: Any, prefix: str = '') -> Dict[str, Any]:
    """Nested dicts / lists -> {'a.b.0.c': leaf}; lists of plain values stay one leaf."""
    if isinstance(x, dict):
        out = {}
        for k, v in x.items():
            out.update(flatten(v, f'{prefix}{k}.'))
        return out
    if isinstance(x, (list, tuple)) and any(isinstance(i, (dict, list, tuple)) for i in x):
        out = {}
        for i, v in enumerate(x):
            out.update(flatten(v, f'{prefix}{i}.'))
        return out
    return {prefix[:-1]: list(x) if isinstance(x, tuple) else x}


def resolved(path: str) -> Dict[str, Any]:
    """The Runner's view of a config: its fields, with ``_scope_`` marks of ``mmdet::`` bases
    dropped (they repeat default_scope) and every scheduler's ``end`` filled in as the Runner
    does (mmengine.runner.Runner.build_param_scheduler: max_epochs / max_iters)."""
    cfg = Config.fromfile(path).to_dict()
    cfg = {k: v for k, v in cfg.items() if k in RUNNER_KEYS}
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset = cfg.get(loader, {}).get('dataset', {})
        if 'pipeline' in dataset:  # our label check (a no-op on valid data) is listed, not diffed
            checks = [t for t in dataset['pipeline'] if t['type'] == 'mixedae.CheckSegAnnotation']
            dataset['pipeline'] = [t for t in dataset['pipeline'] if t not in checks]
            if checks:
                dataset['label_check'] = checks[0]['type']
    train = cfg.get('train_cfg', {})
    for sched in cfg.get('param_scheduler', []):
        if 'end' not in sched:
            sched['end'] = train['max_epochs' if sched.get('by_epoch', True) else 'max_iters']
    return {k: v for k, v in flatten(cfg).items() if not k.endswith('._scope_')}


def differences(ours: Dict[str, Any], theirs: Dict[str, Any]
                ) -> Dict[str, Tuple[Any, Any]]:
    absent = '<absent>'
    return {k: (ours.get(k, absent), theirs.get(k, absent)) for k in sorted(set(ours) | set(theirs))
            if ours.get(k, absent) != theirs.get(k, absent)}


def check_listed(diff: Dict[str, Tuple[Any, Any]], listed: Dict[str, str]) -> None:
    def covers(entry: str, key: str) -> bool:
        return key == entry or key.startswith(entry + '.')

    unlisted = {k: v for k, v in diff.items() if not any(covers(e, k) for e in listed)}
    assert not unlisted, f'differences not listed (ours, reference): {unlisted}'
    stale = [e for e in listed if not any(covers(e, k) for k in diff)]
    assert not stale, f'listed differences that no longer occur: {stale}'


# ------------------------------------------------------------------------- ADE20K
def vit_settings(b: dict) -> dict:
    """Our ViT's architecture settings, defaults filled in."""
    kw = {n: p.default for n, p in inspect.signature(ViT).parameters.items()
          if p.default is not inspect.Parameter.empty}
    kw.update(b)
    size = kw['img_size']
    return dict(img_size=tuple(size) if not isinstance(size, int) else (size, size),
                patch_size=kw['patch_size'], in_chans=kw['in_chans'],
                embed_dim=kw['embed_dim'], depth=kw['depth'], num_heads=kw['num_heads'],
                mlp_ratio=float(kw['mlp_ratio']), qkv_bias=kw['qkv_bias'],
                drop_rate=kw['drop_rate'], attn_drop_rate=kw['attn_drop_rate'],
                drop_path_rate=kw['drop_path_rate'], out_indices=list(kw['out_indices']),
                final_norm=kw['final_norm'], class_token=kw['with_cls_token'],
                abs_pos_embed=kw['use_abs_pos_embed'],
                rel_pos_bias='BEiT, zero-init' if kw['use_rel_pos_bias'] else None,
                layer_scale=kw['init_values'], window_size=kw['window_size'],
                norm=('LN', LayerNorm.keywords['eps']), act='GELU', ffn_fcs=2, patch_norm=False)


def mmseg_mae_settings(b: dict) -> dict:
    """mmseg MAE's settings in the same terms; what its code fixes is stated with the place."""
    kw = {n: p.default for n, p in inspect.signature(MAE).parameters.items()
          if p.default is not inspect.Parameter.empty}
    kw.update(b)
    return dict(img_size=tuple(kw['img_size']), patch_size=kw['patch_size'],
                in_chans=kw['in_channels'], embed_dim=kw['embed_dims'], depth=kw['num_layers'],
                num_heads=kw['num_heads'], mlp_ratio=float(kw['mlp_ratio']),
                qkv_bias=True,             # MAE._build_layers: bias=True (fused qkv bias)
                drop_rate=0.,              # BEiTTransformerEncoderLayer: drop_rate=0.
                attn_drop_rate=kw['attn_drop_rate'], drop_path_rate=kw['drop_path_rate'],
                out_indices=list(kw['out_indices']), final_norm=kw['final_norm'],
                class_token=True, abs_pos_embed=True,   # MAE.__init__ / forward
                rel_pos_bias='BEiT, zero-init',         # MAEAttention: table in every layer, zeros
                layer_scale=kw['init_values'], window_size=0,
                norm=(kw['norm_cfg']['type'], kw['norm_cfg'].get('eps', 1e-5)),
                act=kw['act_cfg']['type'], ffn_fcs=kw['num_fcs'], patch_norm=kw['patch_norm'])


def test_ade20k_backbone_settings_equal_mmseg():
    ours = Config.fromfile(os.path.join(
        ROOT, 'configs/ade20k/upernet_vit-b16-mae_8xb2-160k_ade20k-512x512.py')).model.backbone
    theirs = Config.fromfile(SEG_REF).model.backbone
    ours = {k: v for k, v in ours.items() if k not in ('type', 'init_cfg')}
    theirs = {k: v for k, v in theirs.items() if k != 'type'}
    assert not theirs.get('norm_eval')  # LayerNorm only: nothing to freeze either way
    a, b = vit_settings(ours), mmseg_mae_settings(
        {k: v for k, v in theirs.items() if k != 'norm_eval'})
    assert a == b, {k: (a[k], b[k]) for k in a if a[k] != b[k]}


@pytest.mark.parametrize('config', ['upernet_vit-b16-mae_8xb2-160k_ade20k-512x512.py',
                                    'upernet_vit-b16-mixedae_8xb2-160k_ade20k-512x512.py'])
def test_ade20k_config_equals_mmseg_except_listed(config):
    ours = resolved(os.path.join(ROOT, 'configs/ade20k', config))
    theirs = resolved(SEG_REF)
    diff = {k: v for k, v in differences(ours, theirs).items()
            if not (k.startswith('model.backbone.') and k != 'model.backbone.type'
                    and not k.startswith('model.backbone.init_cfg'))}
    check_listed(diff, ADE20K_DIFFERENCES)
    # the neck default we spell out is mmseg's
    assert inspect.signature(Feature2Pyramid).parameters['norm_cfg'].default == \
        Config.fromfile(os.path.join(ROOT, 'configs/ade20k', config)).model.neck.norm_cfg


# ------------------------------------------------------------------------ COCO A
@pytest.mark.parametrize('config,listed', [
    ('mask-rcnn_vit-b16-mae_fpn_8xb2-1x_coco.py', COCO_A_DIFFERENCES),
    ('mask-rcnn_vit-b16-mixedae_fpn_8xb2-1x_coco.py', COCO_A_DIFFERENCES),
    ('mask-rcnn_vit-b16-mae_fpn_8xb2-3x_coco.py', COCO_A_3X_DIFFERENCES),
])
def test_coco_protocol_a_equals_mmdet_mask_rcnn_except_listed(config, listed):
    ours = resolved(os.path.join(ROOT, 'configs/coco', config))
    check_listed(differences(ours, resolved(DET_REF)), listed)


def test_an_unlisted_or_stale_difference_fails():
    with pytest.raises(AssertionError, match='not listed'):
        check_listed({'test_cfg.stride': ([341, 341], [256, 256])}, {'model.backbone': 'x'})
    with pytest.raises(AssertionError, match='no longer occur'):
        check_listed({'model.backbone.depth': (12, 50)}, {'model.backbone': 'x', 'fp16': 'y'})
    assert differences({'a': 1, 'b': [1, 2]}, {'a': 1, 'b': [1, 3], 'c': 0}) == {
        'b': ([1, 2], [1, 3]), 'c': ('<absent>', 0)}


# ------------------------------------------------------------------------ COCO B
#: mmdet projects/ViTDet (commit 394f758), restated: vitdet_mask-rcnn_vit-b-mae_lsj-100e.py and
#: lsj-100e_coco-instance.py (not installed here). Relative positions and test padding are
#: checked by the ViTDet backbone tests.
VITDET_TRAIN_PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomResize', scale=[1024, 1024], ratio_range=[0.1, 2.0], keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=[1024, 1024],
         recompute_bbox=True, allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=[1e-2, 1e-2]),
    dict(type='Pad', size=[1024, 1024], pad_val=dict(img=[114, 114, 114])),
    dict(type='PackDetInputs'),
]
VITDET = {
    'model.backbone.img_size': [1024, 1024], 'model.backbone.patch_size': 16,
    'model.backbone.embed_dim': 768, 'model.backbone.depth': 12, 'model.backbone.num_heads': 12,
    'model.backbone.drop_path_rate': 0.1, 'model.backbone.window_size': 14,
    'model.backbone.window_block_indexes': [0, 1, 3, 4, 6, 7, 9, 10],
    'model.neck.out_channels': 256, 'model.neck.num_outs': 5,
    'model.rpn_head.num_convs': 2,
    'model.roi_head.bbox_head.type': 'Shared4Conv1FCBBoxHead',
    'model.roi_head.bbox_head.conv_out_channels': 256,
    'train_dataloader.batch_size': 4,
    'optim_wrapper.optimizer.type': 'AdamW', 'optim_wrapper.optimizer.lr': 1e-4,
    'optim_wrapper.optimizer.betas': [0.9, 0.999], 'optim_wrapper.optimizer.weight_decay': 0.1,
    'optim_wrapper.paramwise_cfg.layer_decay_rate': 0.7,
    'param_scheduler.0.type': 'LinearLR', 'param_scheduler.0.start_factor': 0.001,
    'param_scheduler.0.end': 250, 'param_scheduler.0.by_epoch': False,
    'param_scheduler.1.type': 'MultiStepLR', 'param_scheduler.1.milestones': [163889, 177546],
    'param_scheduler.1.gamma': 0.1, 'param_scheduler.1.end': 184375,
    'train_cfg.type': 'IterBasedTrainLoop', 'train_cfg.max_iters': 184375,
    'train_cfg.val_interval': 5000,
    'val_evaluator.metric': ['bbox', 'segm'],
}


def test_coco_protocol_b_matches_mmdet_vitdet_restated():
    path = os.path.join(ROOT, 'configs/coco/vitdet_mask-rcnn_vit-b16-mae_16xb4-100e_coco-lsj-1024.py')
    ours = resolved(path)
    wrong = {k: (ours.get(k, '<absent>'), v) for k, v in VITDET.items() if ours.get(k) != v}
    assert not wrong, f'(ours, ViTDet): {wrong}'
    cfg = Config.fromfile(path)
    assert cfg.model.backbone.with_cls_token is False and cfg.model.backbone.out_indices == (11,)
    assert tuple(cfg.model.neck.scales) == (4.0, 2.0, 1.0, 0.5)
    for norm in (cfg.model.neck.norm_cfg, cfg.model.roi_head.bbox_head.norm_cfg,
                 cfg.model.roi_head.mask_head.norm_cfg):
        assert norm.type.endswith('LN2d')
    pipeline = Config(dict(p=cfg.train_dataloader.dataset.pipeline)).to_dict()['p']
    assert flatten(pipeline) == flatten(VITDET_TRAIN_PIPELINE)
    resize = cfg.test_dataloader.dataset.pipeline[1]
    assert (resize.type, tuple(resize.scale), resize.keep_ratio) == ('Resize', (1024, 1024), True)
