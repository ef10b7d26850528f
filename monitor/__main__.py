"""``python -m facewire.monitor``: the same as ``facewire monitor``."""

import sys

from facewire.monitor.cli import main

if __name__ == "__main__":
    sys.exit(main())
