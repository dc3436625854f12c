# Tiny CPU configuration of protocol B (ViTDet): windows of 4x4 tokens in blocks 0 and 2,
# global attention in blocks 1 and 3, LSJ at 64 px, every batch padded to 64 x 64.
_base_ = ['./vitdet_mask-rcnn_vit-b16-scratch_16xb4-100e_coco-lsj-1024.py',
          './_base_/tiny_synthetic.py']
data_root = {{_base_.tiny_data_root}}
image_size = (64, 64)
model = dict(
    data_preprocessor=dict(pad_size_divisor=64),
    backbone={{_base_.tiny_backbone_vitdet}},
    # 8x8 patches: stride 8 -> strides 4, 8, 16, 32 (+64) as the heads expect
    neck=dict(in_channels=64, out_channels=32, scales=(2.0, 1.0, 0.5, 0.25)),
    rpn_head={{_base_.tiny_rpn_head}},
    roi_head={{_base_.tiny_roi_head_vitdet}},
    train_cfg={{_base_.tiny_model_train_cfg}},
    test_cfg={{_base_.tiny_model_test_cfg}})
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.5, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=image_size,
         recompute_bbox=True, allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='Pad', size=image_size, pad_val=dict(img=(114, 114, 114))),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
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
