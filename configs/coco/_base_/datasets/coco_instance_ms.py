# COCO 2017 instances; multi-scale training (shorter side 480-800, longer <= 1333),
# single-scale 1333x800 test; box and mask AP.
_base_ = 'mmdet::_base_/datasets/coco_instance.py'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomChoiceResize',
         scales=[(1333, s) for s in range(480, 801, 32)], keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
# mixedae.CocoDataset is mmdet's, with errors naming the annotation file or image at fault
dataset_type = 'mixedae.CocoDataset'
train_dataloader = dict(dataset=dict(type=dataset_type, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(type=dataset_type))
test_dataloader = val_dataloader
val_evaluator = dict(metric=['bbox', 'segm'])
test_evaluator = val_evaluator
