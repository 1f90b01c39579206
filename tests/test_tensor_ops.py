"""The naive loop implementations agree with NumPy, leave inputs alone and reject bad shapes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mnist_pipeline.scratch.tensor_ops import (
    naive_add,
    naive_add_matrix_and_vector,
    naive_matrix_dot,
    naive_matrix_vector_dot,
    naive_relu,
    naive_reshape,
    naive_transpose,
    naive_vector_dot,
)

# Small sides keep the Python loops quick; 0 is included because empty arrays are legal.
SIDE = st.integers(min_value=0, max_value=5)
# Bounded finite values: sums of products then stay far from overflow and the comparison
# with NumPy only has to allow for a different order of additions.
VALUES = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, width=64)
FAST = settings(max_examples=40, deadline=None)


def float_arrays(shape: tuple[int, ...]) -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(np.float64, shape, elements=VALUES)


def assert_unchanged_after(function, *arrays: np.ndarray):
    copies = [array.copy() for array in arrays]
    result = function(*arrays)
    for array, copy in zip(arrays, copies, strict=True):
        np.testing.assert_array_equal(array, copy)
    return result


@FAST
@given(hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=5).flatmap(float_arrays))
def test_relu_matches_numpy_and_keeps_input(x):
    result = assert_unchanged_after(naive_relu, x)
    np.testing.assert_array_equal(result, np.maximum(x, 0))
    assert result.dtype == x.dtype


@FAST
@given(st.tuples(SIDE, SIDE).flatmap(lambda shape: st.tuples(*[float_arrays(shape)] * 2)))
def test_add_matches_numpy_and_keeps_inputs(pair):
    x, y = pair
    result = assert_unchanged_after(naive_add, x, y)
    np.testing.assert_array_equal(result, x + y)


@FAST
@given(
    st.tuples(SIDE, SIDE).flatmap(
        lambda shape: st.tuples(float_arrays(shape), float_arrays((shape[1],)))
    )
)
def test_add_matrix_and_vector_matches_broadcasting(pair):
    x, y = pair
    result = assert_unchanged_after(naive_add_matrix_and_vector, x, y)
    np.testing.assert_array_equal(result, x + y)


@FAST
@given(SIDE.flatmap(lambda length: st.tuples(*[float_arrays((length,))] * 2)))
def test_vector_dot_matches_numpy(pair):
    x, y = pair
    result = assert_unchanged_after(naive_vector_dot, x, y)
    np.testing.assert_allclose(result, np.dot(x, y), rtol=1e-12, atol=1e-9)


@FAST
@given(
    st.tuples(SIDE, SIDE).flatmap(
        lambda shape: st.tuples(float_arrays(shape), float_arrays((shape[1],)))
    )
)
def test_matrix_vector_dot_matches_numpy(pair):
    x, y = pair
    result = assert_unchanged_after(naive_matrix_vector_dot, x, y)
    assert result.shape == (x.shape[0],)
    np.testing.assert_allclose(result, np.dot(x, y), rtol=1e-12, atol=1e-9)


@FAST
@given(
    st.tuples(SIDE, SIDE, SIDE).flatmap(
        lambda sides: st.tuples(float_arrays(sides[:2]), float_arrays(sides[1:]))
    )
)
def test_matrix_dot_matches_numpy(pair):
    x, y = pair
    result = assert_unchanged_after(naive_matrix_dot, x, y)
    assert result.shape == (x.shape[0], y.shape[1])
    np.testing.assert_allclose(result, x @ y, rtol=1e-12, atol=1e-9)


@st.composite
def array_and_new_shape(draw) -> tuple[np.ndarray, tuple[int, ...]]:
    """An array of up to 4 dims and a random other shape (maybe with a -1) of the same size."""
    x = draw(hnp.arrays(np.float64, hnp.array_shapes(min_dims=0, max_dims=4, max_side=4)))
    factors = []
    remaining = x.size
    while remaining > 1:
        divisors = [d for d in range(2, remaining + 1) if remaining % d == 0]
        # The fourth factor takes all that is left, so the new shape has at most 4 dims + 1s.
        factor = remaining if len(factors) == 3 else draw(st.sampled_from(divisors))
        factors.append(factor)
        remaining //= factor
    factors += [1] * draw(st.integers(0, 2))
    if x.size == 0:
        factors.append(0)
    shape = draw(st.permutations(factors))
    if shape and x.size > 0 and draw(st.booleans()):
        shape[draw(st.integers(0, len(shape) - 1))] = -1
    return x, tuple(shape)


@FAST
@given(array_and_new_shape())
def test_reshape_matches_numpy(case):
    x, new_shape = case
    result = assert_unchanged_after(lambda array: naive_reshape(array, new_shape), x)
    expected = np.reshape(x, new_shape)
    assert result.shape == expected.shape
    np.testing.assert_array_equal(result, expected)
    assert not np.shares_memory(result, x)


@FAST
@given(hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=5).flatmap(float_arrays))
def test_transpose_matches_numpy_and_copies(x):
    result = assert_unchanged_after(naive_transpose, x)
    np.testing.assert_array_equal(result, x.T)
    assert not np.shares_memory(result, x)


def test_known_answers_from_the_chapter():
    x = np.array([[5, 78, 2, 34, 0], [6, 79, 3, 35, 1], [7, 80, 4, 36, 2]])
    assert naive_reshape(x, (5, 3)).tolist() == x.reshape((5, 3)).tolist()
    assert naive_reshape(x, (5, -1)).shape == (5, 3)
    assert naive_reshape(x, -1).tolist() == [5, 78, 2, 34, 0, 6, 79, 3, 35, 1, 7, 80, 4, 36, 2]
    assert naive_transpose(x).tolist() == x.T.tolist()
    assert naive_relu(np.array([[-1.5, 0.0, 2.0]])).tolist() == [[0.0, 0.0, 2.0]]
    assert naive_matrix_dot(np.array([[1, 2], [3, 4]]), np.array([[5], [6]])).tolist() == [
        [17],
        [39],
    ]


def test_the_chapters_own_reshape_example_is_impossible():
    # The chapter reshapes this (3, 5) matrix, 15 values, into (2, 3, 5), which needs 30.
    x = np.array([[5, 78, 2, 34, 0], [6, 79, 3, 35, 1], [7, 80, 4, 36, 2]])
    with pytest.raises(ValueError, match="cannot reshape"):
        x.reshape((2, 3, 5))
    with pytest.raises(ValueError, match=r"\(3, 5\) \(15 values\)"):
        naive_reshape(x, (2, 3, 5))


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.int64])
def test_dtypes_are_kept(dtype):
    x = np.arange(-3, 3, dtype=dtype).reshape(2, 3)
    vector = np.arange(3, dtype=dtype)
    assert naive_relu(x).dtype == dtype
    assert naive_add(x, x).dtype == dtype
    assert naive_add_matrix_and_vector(x, vector).dtype == dtype
    assert naive_vector_dot(vector, vector).dtype == dtype
    assert naive_matrix_vector_dot(x, vector).dtype == dtype
    assert naive_matrix_dot(x, x.T).dtype == dtype
    assert naive_reshape(x, -1).dtype == dtype
    assert naive_transpose(x).dtype == dtype


@pytest.mark.parametrize(
    ("call", "shapes_in_message"),
    [
        (lambda: naive_relu(np.zeros(3)), ["(3,)"]),
        (lambda: naive_relu(np.zeros((2, 2, 2))), ["(2, 2, 2)"]),
        (lambda: naive_add(np.zeros((2, 3)), np.zeros((3, 2))), ["(2, 3)", "(3, 2)"]),
        (lambda: naive_add(np.zeros((2, 3)), np.zeros(3)), ["(3,)"]),
        (
            lambda: naive_add_matrix_and_vector(np.zeros((2, 3)), np.zeros(2)),
            ["(2, 3)", "(2,)"],
        ),
        (lambda: naive_add_matrix_and_vector(np.zeros(3), np.zeros(3)), ["(3,)"]),
        (lambda: naive_vector_dot(np.zeros(3), np.zeros(4)), ["(3,)", "(4,)"]),
        (lambda: naive_vector_dot(np.zeros((1, 3)), np.zeros(3)), ["(1, 3)"]),
        (lambda: naive_matrix_vector_dot(np.zeros((2, 3)), np.zeros(2)), ["(2, 3)", "(2,)"]),
        (lambda: naive_matrix_vector_dot(np.zeros((2, 3)), np.zeros((3, 1))), ["(3, 1)"]),
        (lambda: naive_matrix_dot(np.zeros((2, 3)), np.zeros((2, 3))), ["(2, 3)"]),
        (lambda: naive_matrix_dot(np.zeros(3), np.zeros((3, 2))), ["(3,)"]),
        (lambda: naive_reshape(np.zeros((2, 3)), (4, 2)), ["(2, 3)", "(4, 2)"]),
        (lambda: naive_reshape(np.zeros((2, 3)), (-1, -1)), ["(-1, -1)"]),
        (lambda: naive_reshape(np.zeros((2, 3)), (4, -1)), ["(2, 3)", "(4, -1)"]),
        (lambda: naive_reshape(np.zeros((2, 3)), (-2, -3)), ["(-2, -3)"]),
        (lambda: naive_transpose(np.zeros(3)), ["(3,)"]),
    ],
)
def test_wrong_shapes_raise_value_error_naming_them(call, shapes_in_message):
    with pytest.raises(ValueError) as raised:
        call()
    for shape in shapes_in_message:
        assert shape in str(raised.value)
