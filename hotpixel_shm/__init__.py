"""hotpixel_shm: find hot, stuck, dead and noisy pixels of a camera sensor.

Per-subpixel mean and variance over many photos are computed by worker
processes that update Welford (or exact integer) accumulators living in shared
memory; the partial results are merged with the parallel formula of Chan,
Golub and LeVeque, and each subpixel is then judged against its same-channel
neighbours.

The Python API, one camera body at a time::

    import hotpixel_shm
    for a in hotpixel_shm.analyse("~/Pictures/2026", all_cameras=True):
        print(a.camera.label, len(a.defects))
        a.write(json=f"defects.{a.camera.file_tag}.json")
"""

__version__ = "0.1.0"

from .errors import HotPixelError, PlanError, SkipFile  # noqa: E402

__all__ = ["__version__", "HotPixelError", "PlanError", "SkipFile", "Defect", "Stats",
           "Camera", "analyse", "iter_analyses", "Analysis", "TooFewImages"]

# The pipeline (and detection's scipy) load on first use: worker processes
# import this package too, and need none of it.
# numpy too: the command installs its signal handlers before it loads.
_LAZY = {"analyse": "api", "iter_analyses": "api", "Analysis": "analysis",
         "TooFewImages": "pipeline", "Camera": "camera", "Defect": "model", "Stats": "model"}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
