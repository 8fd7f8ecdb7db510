"""Run the command line: ``python -m hotpixel_shm``."""
import sys

from . import _early

# Ctrl-C or SIGTERM while numpy and the rest load is recorded, and the
# command stops at its first safe point with the signal's exit code.
_early.install()

from .cli import main  # noqa: E402

sys.exit(main())
