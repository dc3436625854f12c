# mask-rcnn_vit-b16-scratch_fpn_8xb2-3x_coco.py with the backbone pretrained by the official MAE release (--src-format mae).
_base_ = './mask-rcnn_vit-b16-scratch_fpn_8xb2-3x_coco.py'
model = dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='pretrain/mae_vit-b16_backbone.pth')))
