"""Imported first by every benchmark: one BLAS/OpenMP/numba thread everywhere, set before
numpy (or anything that imports it) is loaded, so that figures are per core."""

import os

for _var in (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMBA_NUM_THREADS",
):
    os.environ[_var] = "1"
