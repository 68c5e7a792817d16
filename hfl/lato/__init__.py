"""LaTo: landmark-tokenized diffusion transformer (paper Sec. 3.2, 4.1, App. D.1).

Modules, read top to bottom:

- ``canvas``: landmark coordinate maps (stored image -> 512 canvas -> [-1, 1]), iBUG-68 flip, rasteriser.
- ``tokenizer``: the landmark VQ-VAE (Eq. 2): 1-D residual conv encoder/decoder and an EMA codebook.
- ``rope``: 3-D rotary embeddings (Eq. 3) and location-mapped landmark ids (Eq. 4).
- ``layers`` / ``connector`` / ``dit``: the Step1X-Edit DiT with landmark tokens (Eq. 5, 6).
- ``vae`` / ``text_encoder``: FLUX autoencoder (diffusers' ``AutoencoderKL``) and the Qwen2.5-VL text encoder
  with Step1X-Edit's preprocessing; ``qwen_tiny``: a tiny Qwen-format tokenizer for CPU tests.
- ``sampling``: the flow schedule (diffusers' ``FlowMatchEulerDiscreteScheduler``) and landmark-aware CFG,
  with the release's guidance for models without learned unconditional landmark tokens.
- ``loaders``: local-path loaders with key mapping for Step1X-Edit and the released LaTo files;
  ``build``: LaTo's parts from a recipe (trainer and run loader).

``tests/test_lato_reference.py`` checks these against the official release's own modules
(``scripts/reference_goldens.py``).

Importing this package does not import torch; import the submodules you need.
"""
