"""The package's exceptions."""

__all__ = ["HotPixelError", "PlanError", "SkipFile"]


class HotPixelError(ValueError):
    """Base class of the errors hotpixel_shm raises on purpose."""


class PlanError(HotPixelError):
    """No plan fits in the memory budget (or a forced plan exceeds it)."""


class SkipFile(HotPixelError):
    """One input file cannot be used; ``str(exc)`` is the reason shown to the user."""
