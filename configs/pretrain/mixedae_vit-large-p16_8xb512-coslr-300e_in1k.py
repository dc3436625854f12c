_base_ = './mixedae_vit-base-p16_8xb512-coslr-300e_in1k.py'
model = dict(backbone=dict(embed_dim=1024, depth=24, num_heads=16))
