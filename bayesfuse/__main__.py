"""``python -m bayesfuse`` = the ``bayesfuse`` command."""

import sys

from bayesfuse.cli import main

sys.exit(main())
