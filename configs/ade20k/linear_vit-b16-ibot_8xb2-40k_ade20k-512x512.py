# Linear probe of linear_vit-b16-scratch_... on the frozen backbone pretrained by the official iBOT ViT-B/16 teacher, converted with --src-format ibot.
# Another file: --cfg-options model.backbone.init_cfg.checkpoint=PATH
_base_ = './linear_vit-b16-scratch_8xb2-40k_ade20k-512x512.py'
model = dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='pretrain/ibot_vit-b16_backbone.pth')))
