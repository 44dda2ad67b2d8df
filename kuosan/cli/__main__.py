"""``python -m kuosan.cli ...`` (what torchrun runs for DDP training): the same as the ``kuosan`` command."""

import sys

from . import main

sys.exit(main())
