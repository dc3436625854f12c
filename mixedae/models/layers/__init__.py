"""Layer modules of the ViT backbones, one concept each: attention (transfer and homologous),
the transformer block, position tables, relative-position biases, windows and the top-K
attention kernel."""
