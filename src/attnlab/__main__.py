"""``python -m attnlab``: the command line, as the ``attnlab`` console script (also under torchrun:
``torchrun --standalone --nproc-per-node 2 -m attnlab train ...``)."""

import sys

from attnlab.cli import main

sys.exit(main())
