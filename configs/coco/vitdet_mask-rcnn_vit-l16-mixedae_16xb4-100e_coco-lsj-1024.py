# ViTDet with ViT-L/16 (global attention in blocks 5, 11, 17, 23; drop path 0.4; layer decay
# 0.8, ViTDet's ViT-L values).
_base_ = './vitdet_mask-rcnn_vit-b16-mixedae_16xb4-100e_coco-lsj-1024.py'
model = dict(
    backbone=dict(embed_dim=1024, depth=24, num_heads=16, drop_path_rate=0.4,
                  out_indices=(23,),
                  window_block_indexes=tuple(i for i in range(24) if i not in (5, 11, 17, 23)),
                  init_cfg=dict(checkpoint='pretrain/mixedae_vit-l16_backbone.pth')),
    neck=dict(in_channels=1024))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.8))
