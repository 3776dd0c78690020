"""kquant.blas: numpy's matrix products on one thread inside a block, the thread count restored after."""

import pytest

from kquant import blas


def test_one_blas_thread_restores_the_thread_count():
    calls = blas._openblas()
    if calls is None:
        pytest.skip("numpy here does not use its bundled OpenBLAS")
    get, _ = calls
    before = get()
    with blas.one_blas_thread():
        assert get() == 1
    assert get() == before


def test_the_thread_count_is_restored_after_an_error_too():
    calls = blas._openblas()
    if calls is None:
        pytest.skip("numpy here does not use its bundled OpenBLAS")
    before = calls[0]()
    with pytest.raises(ZeroDivisionError), blas.one_blas_thread():
        raise ZeroDivisionError("inside the block")
    assert calls[0]() == before
