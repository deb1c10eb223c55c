"""Start the TorchDesk window: ``python main.py [PATH ...]`` (same as the ``torchdesk`` command)."""

import sys

from gui.app import main

if __name__ == "__main__":
    sys.exit(main())
