"""Elementary functions from the C library, elementwise: the same bits on every CPU.

numpy evaluates ``log1p``, ``expm1`` and ``log`` with SIMD kernels where the CPU has AVX-512,
and with the C library elsewhere; the two differ in the last bit for a few per cent of
inputs. The digitisation and calibration chains use these ufuncs instead, so a hit gets the
same value on a laptop, on every worker of a heterogeneous cluster, and in the C++ of
:mod:`calocoffea.rdf` (which calls the same C library).
"""

from __future__ import annotations

import math

import numba

__all__ = ["expm1", "log1p"]


@numba.vectorize(["float64(float64)"], cache=True)
def log1p(x):
    """ln(1 + x), elementwise, from the C library."""
    return math.log1p(x)


@numba.vectorize(["float64(float64)"], cache=True)
def expm1(x):
    """exp(x) - 1, elementwise, from the C library."""
    return math.expm1(x)
