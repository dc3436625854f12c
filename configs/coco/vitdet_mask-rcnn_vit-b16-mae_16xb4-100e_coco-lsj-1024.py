# vitdet_mask-rcnn_vit-b16-scratch_... with the backbone pretrained by the official MAE release (--src-format mae).
_base_ = './vitdet_mask-rcnn_vit-b16-scratch_16xb4-100e_coco-lsj-1024.py'
model = dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='pretrain/mae_vit-b16_backbone.pth')))
