"""TorchDesk engine: all PyTorch work, free of Qt so it runs on a server.

Importing this package is cheap: torch is imported only by the modules that need it.
"""

__version__ = "0.1.0"
