"""`python -m asfp_explorer ...`: the command line, as torchrun launches it
(`torchrun --nproc_per_node N -m asfp_explorer train ...`, docs/distributed.md)."""

import sys

from .cli import main

sys.exit(main())
