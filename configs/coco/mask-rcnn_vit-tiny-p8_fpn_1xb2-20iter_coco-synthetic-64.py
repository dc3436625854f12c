# Tiny CPU configuration of protocol A (tests and `make demo`); BN replaces SyncBN.
_base_ = ['./mask-rcnn_vit-b16-scratch_fpn_8xb2-1x_coco.py', './_base_/tiny_synthetic.py']
data_root = {{_base_.tiny_data_root}}
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    backbone={{_base_.tiny_backbone_fpn}},
    neck=[
        # 8x8 patches: stride 8 -> rescale to strides 4, 8, 16, 32 as FPN and anchors expect
        dict(type='mmseg.Feature2Pyramid', embed_dim=64, rescales=[2, 1, 0.5, 0.25],
             norm_cfg=norm_cfg),
        dict(type='FPN', in_channels=[64] * 4, out_channels=32, num_outs=5),
    ],
    rpn_head={{_base_.tiny_rpn_head}},
    roi_head={{_base_.tiny_roi_head}},
    train_cfg={{_base_.tiny_model_train_cfg}},
    test_cfg={{_base_.tiny_model_test_cfg}})
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomChoiceResize', scales=[(120, 56), (120, 64), (120, 72)], keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(120, 64), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo={{_base_.tiny_metainfo}},
                 filter_cfg=dict(filter_empty_gt=True, min_size=4), pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo={{_base_.tiny_metainfo}},
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file={{_base_.tiny_val_ann}})
test_evaluator = val_evaluator
train_cfg = {{_base_.tiny_train_cfg}}
param_scheduler = {{_base_.tiny_param_scheduler}}
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(lr=5e-4))  # fp32 on CPU
default_hooks = {{_base_.tiny_default_hooks}}
log_processor = dict(by_epoch=False)
