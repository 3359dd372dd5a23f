"""The error a sampler raises when its samples stop being finite."""

__all__ = ["NonFiniteSampleError"]


class NonFiniteSampleError(FloatingPointError):
    """Raised when NaN or Inf appears in the samples mid-sampling.

    Attributes:
        sampler: the sampler's name.
        step: 0-based index of the first step whose output was not finite.
        num_steps: the number of steps the sampler was running.

    ``NonFiniteSampleError(message)`` (one argument) rebuilds one from its message, with
    the attributes None.
    """

    def __init__(self, sampler, step=None, num_steps=None, label=None):
        if step is None:  # rebuilt from a message (a worker process's error reaches a driver as text)
            self.sampler, self.step, self.num_steps = None, None, None
            super().__init__(sampler)
            return
        self.sampler, self.step, self.num_steps = sampler, int(step), int(num_steps)
        where = f"step {self.step} of {self.num_steps}"
        if label is not None:
            where += f" ({label})"
        super().__init__(
            f"{sampler}: the samples became NaN or Inf at {where}. Check the model's "
            "outputs at that noise level (a diverged network, or a step size too large)."
        )
