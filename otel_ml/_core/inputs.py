"""Read the batch size of a model input without copying it, whatever its type.

Supported without importing their libraries: numpy arrays, pandas DataFrames/Series, scipy sparse matrices,
torch tensors, lists/tuples, dicts of columns. Nothing here calls a user object's ``__len__`` or
``__array__`` unless its type is one of those known containers.
"""

from __future__ import annotations

import numpy as np


def batch_size(x: object) -> int:
    """Rows in ``x``: the first dimension of array-likes, 1 for a single scalar or unknown object."""
    if type(x) is np.ndarray:
        return int(x.shape[0]) if x.ndim else 1
    if isinstance(x, (list, tuple)):
        return len(x)
    module = type(x).__module__
    if module.split(".")[0] in ("pandas", "torch", "numpy") or module.startswith("scipy.sparse"):
        shape = getattr(x, "shape", None)
        if isinstance(shape, tuple):
            return int(shape[0]) if shape else 1
        try:  # torch.Size is a tuple subclass, handled above; anything else sized
            return int(shape[0])  # type: ignore[index]
        except (TypeError, IndexError):
            return 1
    if isinstance(x, dict) and x:  # a dict of columns (or tokenizer output): the first column's length
        first = next(iter(x.values()))
        return 1 if isinstance(first, dict) else batch_size(first)
    return 1
