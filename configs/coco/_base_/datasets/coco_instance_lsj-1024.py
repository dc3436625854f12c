# COCO 2017 instances with large-scale jitter at 1024 (ViTDet): resize by 0.1-2.0, crop and
# pad to 1024x1024; test at 1024 on the longer side, padded to 1024x1024 as mmdet's LSJ
# configs do. The test image is not padded by a transform (mmdet's Pad would move img_shape to
# the padded size, so boxes would be clipped to the padding and pasted masks would fall outside
# the image); the model's data preprocessor pads the batch instead (pad_size_divisor=1024 in
# the ViTDet model base), which keeps img_shape.
_base_ = 'mmdet::_base_/datasets/coco_instance.py'
image_size = (1024, 1024)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.1, 2.0), keep_ratio=True),
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
# mixedae.CocoDataset is mmdet's, with errors naming the annotation file or image at fault
dataset_type = 'mixedae.CocoDataset'
train_dataloader = dict(batch_size=4, sampler=dict(type='InfiniteSampler', shuffle=True),
                        dataset=dict(type=dataset_type, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(type=dataset_type, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(metric=['bbox', 'segm'])
test_evaluator = val_evaluator
