"""``python -m instseg.cli``: the ``instseg`` command."""

import sys

from instseg.cli.commands import main

sys.exit(main())
