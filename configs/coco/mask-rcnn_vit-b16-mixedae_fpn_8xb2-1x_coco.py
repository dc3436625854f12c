# mask-rcnn_vit-b16-scratch_fpn_8xb2-1x_coco.py with the backbone pretrained by MixedAE (--src-format mixedae).
_base_ = './mask-rcnn_vit-b16-scratch_fpn_8xb2-1x_coco.py'
model = dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='pretrain/mixedae_vit-b16_backbone.pth')))
