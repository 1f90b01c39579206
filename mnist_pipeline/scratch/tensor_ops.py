"""The chapter's tensor operations written with explicit Python loops, for teaching.

Each function does by hand what one NumPy call does (named in its docstring), so that the
loops show what the operation means. They are slow by design: use NumPy for real work.
Every function returns a new array and leaves its inputs untouched.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def naive_relu(x: ArrayLike) -> np.ndarray:
    """Element-wise max(x, 0) of a 2D array; like `np.maximum(x, 0)`."""
    x = _require_ndim("naive_relu", "x", x, 2)
    result = np.empty_like(x)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            result[i, j] = max(x[i, j], 0)
    return result


def naive_add(x: ArrayLike, y: ArrayLike) -> np.ndarray:
    """Element-wise sum of two 2D arrays of the same shape; like `x + y`."""
    x = _require_ndim("naive_add", "x", x, 2)
    y = _require_ndim("naive_add", "y", y, 2)
    if x.shape != y.shape:
        raise ValueError(
            f"naive_add needs x and y of the same shape, got x.shape={x.shape} "
            f"and y.shape={y.shape}"
        )
    result = np.empty(x.shape, dtype=np.result_type(x, y))
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            result[i, j] = x[i, j] + y[i, j]
    return result


def naive_add_matrix_and_vector(x: ArrayLike, y: ArrayLike) -> np.ndarray:
    """Adds the vector y to every row of the matrix x; like `x + y` with broadcasting."""
    x = _require_ndim("naive_add_matrix_and_vector", "x", x, 2)
    y = _require_ndim("naive_add_matrix_and_vector", "y", y, 1)
    if x.shape[1] != y.shape[0]:
        raise ValueError(
            "naive_add_matrix_and_vector needs len(y) == x.shape[1] (one value per column), "
            f"got x.shape={x.shape} and y.shape={y.shape}"
        )
    result = np.empty(x.shape, dtype=np.result_type(x, y))
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            # Broadcasting reuses the same y[j] for every row i, as if y were repeated.
            result[i, j] = x[i, j] + y[j]
    return result


def naive_vector_dot(x: ArrayLike, y: ArrayLike) -> np.generic:
    """Dot product of two vectors of the same length; like `np.dot(x, y)`."""
    x = _require_ndim("naive_vector_dot", "x", x, 1)
    y = _require_ndim("naive_vector_dot", "y", y, 1)
    if x.shape != y.shape:
        raise ValueError(
            f"naive_vector_dot needs vectors of the same length, got x.shape={x.shape} "
            f"and y.shape={y.shape}"
        )
    total = np.zeros((), dtype=np.result_type(x, y))
    for i in range(x.shape[0]):
        total += x[i] * y[i]
    return total[()]


def naive_matrix_vector_dot(x: ArrayLike, y: ArrayLike) -> np.ndarray:
    """Product of a matrix and a vector; like `np.dot(x, y)` for 2D x and 1D y."""
    x = _require_ndim("naive_matrix_vector_dot", "x", x, 2)
    y = _require_ndim("naive_matrix_vector_dot", "y", y, 1)
    if x.shape[1] != y.shape[0]:
        raise ValueError(
            "naive_matrix_vector_dot needs x.shape[1] == len(y), "
            f"got x.shape={x.shape} and y.shape={y.shape}"
        )
    result = np.empty(x.shape[0], dtype=np.result_type(x, y))
    for i in range(x.shape[0]):
        # Entry i is the dot product of row i of x with y.
        result[i] = naive_vector_dot(x[i, :], y)
    return result


def naive_matrix_dot(x: ArrayLike, y: ArrayLike) -> np.ndarray:
    """Product of two matrices; like `np.dot(x, y)` or `x @ y` for 2D arrays."""
    x = _require_ndim("naive_matrix_dot", "x", x, 2)
    y = _require_ndim("naive_matrix_dot", "y", y, 2)
    if x.shape[1] != y.shape[0]:
        raise ValueError(
            "naive_matrix_dot needs x.shape[1] == y.shape[0], "
            f"got x.shape={x.shape} and y.shape={y.shape}"
        )
    result = np.empty((x.shape[0], y.shape[1]), dtype=np.result_type(x, y))
    for i in range(x.shape[0]):
        for j in range(y.shape[1]):
            # Entry (i, j) pairs row i of x with column j of y.
            result[i, j] = naive_vector_dot(x[i, :], y[:, j])
    return result


def naive_reshape(x: ArrayLike, new_shape: int | tuple[int, ...]) -> np.ndarray:
    """The same values in row-major order, arranged in a new shape; like `np.reshape`.

    One entry of new_shape may be -1; it is inferred from the size, as in NumPy.
    """
    x = np.asarray(x)
    shape = _resolve_shape(x.shape, new_shape)
    result = np.empty(shape, dtype=x.dtype)
    for flat_index in range(x.size):
        # Both arrays are read in the same row-major order (last axis fastest), so the k-th
        # value of x becomes the k-th value of the result: reshaping never reorders values.
        result[_row_major_index(flat_index, shape)] = x[_row_major_index(flat_index, x.shape)]
    return result


def naive_transpose(x: ArrayLike) -> np.ndarray:
    """Swaps rows and columns of a 2D array; like `x.T`, but returns a copy, not a view."""
    x = _require_ndim("naive_transpose", "x", x, 2)
    result = np.empty((x.shape[1], x.shape[0]), dtype=x.dtype)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            result[j, i] = x[i, j]
    return result


def _require_ndim(function: str, name: str, value: ArrayLike, ndim: int) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != ndim:
        raise ValueError(
            f"{function} expects {name} to be a {ndim}D array, "
            f"got {name}.shape={array.shape} ({array.ndim}D)"
        )
    return array


def _resolve_shape(old_shape: tuple[int, ...], new_shape: int | tuple[int, ...]) -> tuple[int, ...]:
    """Checks new_shape against the number of values and fills in a -1 entry."""
    shape = (new_shape,) if isinstance(new_shape, int | np.integer) else tuple(new_shape)
    size = int(np.prod(old_shape, dtype=np.int64))
    if any(not isinstance(dimension, int | np.integer) for dimension in shape):
        raise ValueError(f"naive_reshape needs integer dimensions, got new_shape={new_shape!r}")
    unknown = [axis for axis, dimension in enumerate(shape) if dimension == -1]
    if len(unknown) > 1 or any(dimension < -1 for dimension in shape):
        raise ValueError(
            "naive_reshape allows non-negative dimensions and at most one -1, "
            f"got new_shape={shape}"
        )
    known_size = int(np.prod([d for d in shape if d != -1], dtype=np.int64))
    if unknown:
        if known_size == 0 or size % known_size != 0:
            raise ValueError(
                f"naive_reshape cannot infer the -1 in new_shape={shape} for an array of "
                f"shape {old_shape} ({size} values)"
            )
        shape = tuple(size // known_size if d == -1 else int(d) for d in shape)
    elif known_size != size:
        raise ValueError(
            f"naive_reshape cannot arrange an array of shape {old_shape} ({size} values) "
            f"into shape {shape} ({known_size} values)"
        )
    return tuple(int(d) for d in shape)


def _row_major_index(flat_index: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The multi-index of the flat_index-th entry when an array is read row-major."""
    index = []
    for dimension in reversed(shape):
        flat_index, position = divmod(flat_index, dimension)
        index.append(position)
    return tuple(reversed(index))
