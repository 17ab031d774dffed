"""Compression: pure tensor functions and the registry of compression methods (``methods``).

Importing the package registers every method (each module calls ``methods.register``).
"""

from squeezelab.compression import ecq, prune, share  # noqa: F401  (each registers its method)
