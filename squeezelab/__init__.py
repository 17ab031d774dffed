"""squeezelab: the SqueezeNet paper (Iandola et al., 2016) and its reproductions as a toolkit.

Public entry points live in the sub-packages (``squeezelab.models``, ``squeezelab.data``,
``squeezelab.engine``, ``squeezelab.weights``, ``squeezelab.compression``); importing this package does no work.
"""

__version__ = "0.1.0"
