# Naive mixing baseline: mixing on, plain attention over the mixed sequence, no segment
# embeddings, no homologous contrastive loss.
_base_ = './mixedae_vit-base-p16_8xb512-coslr-300e_in1k.py'
model = dict(backbone=dict(attn_mode='vanilla', use_segment_embed=False), contrast_weight=0.0)
