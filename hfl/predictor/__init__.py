"""Target-landmark prediction pieces shared by ``inference/`` (edit pipeline, predictors, evaluation) and
``training/`` (predictor and captioner SFT data): instruction parsing (``edit_spec``), the geometric
predictor and its displacement table (``geometric``), CoT traces and prompts (``cot``), grouped landmark
JSON (``landmark_json``), the 512 canvas and image I/O (``canvas``), and pair shards as edit requests
(``shards``). ``inference/`` and ``training/`` both import from here and never from each other.
"""
