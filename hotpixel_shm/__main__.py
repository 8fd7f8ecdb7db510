"""Run the command line: ``python -m hotpixel_shm``."""
import sys

from .cli import main

sys.exit(main())
