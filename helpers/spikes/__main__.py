"""`python -m helpers.spikes ...` is `python -m helpers.spikes.regenerate ...`."""
import sys

from .regenerate import main

sys.exit(main(prog="python -m helpers.spikes"))
