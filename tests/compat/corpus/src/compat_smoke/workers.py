"""Functions run in child processes (must be importable by name there)."""

import os
import warnings


def square(x):
    return x * x


def old_square(x):
    warnings.warn("old_square is deprecated, use square", DeprecationWarning, stacklevel=1)
    return x * x


def child_facts(_):
    import numpy

    return int(numpy.arange(5).sum()), os.getpid() != 0
