"""The pipeline's stages, each a small spec plus an executor (TFX's component / executor split)."""

STAGE_ORDER = ("ingest", "train", "sample", "evaluate", "retrieve", "report")  # the order a run runs them in
