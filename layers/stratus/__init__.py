"""Stratus runtime library, shipped to every function as a Lambda layer.

Nothing in this package does work at import time: settings, AWS clients and the
model client are created on first use and reused for the life of the process.
"""

__version__ = "0.1.0"
