"""The pipeline's stages, each a small spec plus an executor (TFX's component / executor split)."""
