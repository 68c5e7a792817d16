"""LaTo: landmark-tokenized diffusion transformer (paper Sec. 3.2, 4.1, App. D.1).

Modules, read top to bottom:

- ``canvas``: landmark coordinate maps (stored image -> 512 canvas -> [-1, 1]), iBUG-68 flip, rasteriser.
- ``tokenizer``: the landmark VQ-VAE (Eq. 2): 1-D residual conv encoder/decoder and an EMA codebook.
- ``rope``: 3-D rotary embeddings (Eq. 3) and location-mapped landmark ids (Eq. 4).
- ``layers`` / ``connector`` / ``dit``: the Step1X-Edit DiT with landmark tokens (Eq. 5, 6).
- ``vae`` / ``text_encoder``: FLUX autoencoder and the Qwen2.5-VL text encoder wrapper.
- ``loaders``: local-path loaders with key mapping for Step1X-Edit and the released LaTo files.

Importing this package does not import torch; import the submodules you need.
"""
