# Linear probe of linear_vit-b16-scratch_... on the frozen backbone pretrained by the official MAE ViT-B/16 release, converted with --src-format mae.
# Another file: --cfg-options model.backbone.init_cfg.checkpoint=PATH
_base_ = './linear_vit-b16-scratch_8xb2-40k_ade20k-512x512.py'
model = dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='pretrain/mae_vit-b16_backbone.pth')))
