"""hotpixel_shm: find hot, stuck, dead and noisy pixels of a camera sensor.

Per-subpixel mean and variance over many photos are computed by worker
processes that update Welford (or exact integer) accumulators living in shared
memory; the partial results are merged with the parallel formula of Chan,
Golub and LeVeque, and each subpixel is then judged against its same-channel
neighbours.
"""

__version__ = "0.1.0"

from .errors import HotPixelError, PlanError, SkipFile  # noqa: E402
from .model import Defect, Stats  # noqa: E402

__all__ = ["__version__", "HotPixelError", "PlanError", "SkipFile", "Defect", "Stats"]
