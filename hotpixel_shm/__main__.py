"""Run the command line: ``python -m hotpixel_shm``."""
import signal
import sys


def _early(signum, frame):
    # Ctrl-C or SIGTERM before the command has set up its own handling
    # (while numpy and the rest load): nothing has started, leave at once.
    raise SystemExit(128 + signum)


signal.signal(signal.SIGINT, _early)
signal.signal(signal.SIGTERM, _early)

from .cli import main  # noqa: E402

sys.exit(main())
