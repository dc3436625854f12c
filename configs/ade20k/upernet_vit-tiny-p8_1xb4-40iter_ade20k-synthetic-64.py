# Tiny CPU configuration (tests and `make demo`): the ADE20K recipe scaled down to a 4-block
# 64-d ViT with 8x8 patches on 64x64 crops of the synthetic ADE20K-format data, 40 iterations,
# BN instead of SyncBN (no GPU process group on CPU). The data has 5 classes, the shapes of
# mixedae.datasets.synthetic.SHAPE_CLASSES (label k + 1 = class k, 0 = background, ignored), so the
# dataset names them and the heads predict 5 classes.
_base_ = './upernet_vit-b16-scratch_8xb2-160k_ade20k-512x512.py'
data_root = 'data/synthetic/ade'
synthetic_metainfo = dict(
    classes=('disc', 'square', 'triangle', 'cross', 'bar'),
    palette=[[220, 60, 50], [40, 160, 70], [50, 90, 220], [230, 200, 40], [170, 60, 200]])
synthetic_dataset = dict(type='mixedae.BaseSegDataset', data_root=data_root, metainfo=synthetic_metainfo,
                         img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=True)
crop_size = (64, 64)
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(img_size=crop_size, patch_size=8, embed_dim=64, depth=4, num_heads=4,
                  drop_path_rate=0.0, out_indices=(0, 1, 2, 3)),
    # 8x8 patches: rescale the stride-8 maps to strides 4, 8, 16, 32 as in the recipe
    neck=dict(embed_dim=64, rescales=[2, 1, 0.5, 0.25], norm_cfg=norm_cfg),
    decode_head=dict(in_channels=[64] * 4, channels=32, num_classes=5, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=64, channels=16, num_classes=5, norm_cfg=norm_cfg),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(43, 43)))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='mixedae.CheckSegAnnotation', num_classes=5),
    dict(type='RandomResize', scale=(128, 64), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 64), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='mixedae.CheckSegAnnotation', num_classes=5),
    dict(type='PackSegInputs'),
]
# the base's multi-scale + flip around this config's test steps (5 classes)
img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale_factor=r, keep_ratio=True) for r in img_ratios],
        [dict(type='RandomFlip', prob=p, direction='horizontal') for p in (0., 1.)],
    ] + [[step] for step in test_pipeline[2:]]),
]
train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
                        dataset=dict(**synthetic_dataset, pipeline=train_pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(**synthetic_dataset, pipeline=test_pipeline))
test_dataloader = val_dataloader
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(lr=1e-3))  # fp32 on CPU
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=5),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=5),
]
train_cfg = dict(max_iters=40, val_interval=20)
default_hooks = dict(logger=dict(interval=5),
                     checkpoint=dict(interval=10, max_keep_ckpts=2, save_best=None),
                     visualization=dict(draw=False))
env_cfg = dict(cudnn_benchmark=False)
