"""``python -m omicformer``: the same entry point as the ``omicformer`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
