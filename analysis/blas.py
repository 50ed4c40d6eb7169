"""Single-threaded BLAS for the many tiny fits (5 parameters, tens of points): multi-threaded
OpenBLAS spins its threads on every small call, which on a busy 2-core machine made each
L-BFGS-B iteration ~20x slower. Uses threadpoolctl when installed, else sets the thread count
of every loaded OpenBLAS through ctypes (Linux); elsewhere it does nothing."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
from collections.abc import Callable, Iterator
from typing import TypeVar

F = TypeVar("F", bound=Callable)

_SETTERS = ("openblas_set_num_threads", "openblas_set_num_threads64_", "scipy_openblas_set_num_threads64_",
            "scipy_openblas_set_num_threads")
_GETTERS = ("openblas_get_num_threads", "openblas_get_num_threads64_", "scipy_openblas_get_num_threads64_",
            "scipy_openblas_get_num_threads")
_libs: list[tuple[object, object]] | None = None


def _openblas_libs() -> list[tuple[object, object]]:
    """(get, set) function pairs of every OpenBLAS mapped into this process."""
    global _libs
    if _libs:  # found once: numpy/scipy do not load another BLAS later
        return _libs
    paths = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                p = line.split()[-1]
                name = os.path.basename(p).lower()
                if "openblas" in name and ".so" in name:
                    paths.add(p)
    except OSError:
        return []
    out = []
    for p in sorted(paths):
        try:
            lib = ctypes.CDLL(p)
        except OSError:
            continue
        get = next((getattr(lib, n) for n in _GETTERS if hasattr(lib, n)), None)
        set_ = next((getattr(lib, n) for n in _SETTERS if hasattr(lib, n)), None)
        if get is not None and set_ is not None:
            get.restype = ctypes.c_int
            out.append((get, set_))
    _libs = out
    return out


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run the block with one BLAS thread, restoring the previous counts afterwards."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is not None:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
        return
    libs = _openblas_libs()
    saved = []
    for get, set_ in libs:
        try:
            saved.append((set_, int(get())))
            set_(ctypes.c_int(1))
        except (OSError, ValueError, TypeError):  # pragma: no cover - exotic builds
            continue
    try:
        yield
    finally:
        for set_, n in saved:
            set_(ctypes.c_int(n))


def blas_single(fn: F) -> F:
    """Decorator: run `fn` under single_threaded_blas()."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with single_threaded_blas():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
