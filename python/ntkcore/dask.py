"""Kernels and kernel regression on a Dask cluster (the optional extra ``dask``:
``pip install "ntkcore[dask]"``, which brings ``dask[array]`` and ``distributed``).

* :func:`gram` gives a Gram matrix as a ``dask.array`` whose blocks the C++ core computes on
  the workers: nothing is computed until asked, and only the blocks asked for.
* ``ntkcore.KernelRegression(..., solver="pcg", client=client)`` runs the passes of its
  conjugate gradients on the cluster: the training points are scattered to every worker once;
  each pass sends the N x k block of directions out and gets the N x k product back, computed
  by the workers in row blocks ``K(x[rows], x) @ V``.  No block of the N x N kernel leaves a
  worker; the preconditioner's N x m kernel ``K(x, landmarks)`` is computed there in row
  blocks and gathered once.
* ``ntkcore.eigsh(net, x, k, client=client)`` runs the passes of its block Lanczos solver the
  same way (N x block_size numbers out and back per pass); the solver itself stays here.

Networks and activations are plain frozen dataclasses and pickle as they are.  A worker's
core uses as many threads as the worker has (``threads_per_worker``), so start workers with
one process per machine (or per socket) and ``threads_per_worker`` = its cores.

Recipe for a real cluster::

    # on the scheduler machine:  dask scheduler                  (prints tcp://host:8786)
    # on each worker machine:    dask worker tcp://host:8786 --nworkers 1 --nthreads <cores>
    from distributed import Client
    client = Client("tcp://host:8786")
    model = ntkcore.KernelRegression(net, solver="pcg", client=client).fit(x, y)

Cost per pass: one machine computes the ``ceil(N / 128)^2 / 2`` tiles of the upper triangle;
the cluster computes all ``ceil(N / 128)^2`` tiles of the row blocks (the symmetry is not
used across workers), split over the workers, and moves ``8 N k`` bytes to every worker and
``8 N k`` bytes back in all.
"""

from __future__ import annotations

import math

import numpy as np

try:
    import dask.array as da
    import distributed
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "ntkcore.dask needs the optional extra 'dask' (dask[array] and distributed): pip install \"ntkcore[dask]\""
    ) from exc

from ._validation import choice, integer, resolve_dtype
from .dynamics import _network_inputs
from .regression import _KERNELS, _network, _product, _rows

__all__ = ["gram"]


def _worker_threads() -> int:
    """The threads of the worker running this task (0: all OpenMP offers, off a worker)."""
    try:
        return int(distributed.get_worker().state.nthreads)
    except (ValueError, AttributeError):
        return 0


def _gram_block(a: np.ndarray, b: np.ndarray, net, kind: str) -> np.ndarray:
    return getattr(net.kernels(a, b, dtype=a.dtype, n_threads=_worker_threads() or None), kind)


def _chunk_rows(chunks, name: str) -> int:
    return integer(chunks, name, minimum=1)


def gram(net, x1, x2=None, kind: str = "ntk", chunks=1024):
    """The Gram matrix ``K(x1, x2)`` (NTK or NNGP) as a lazy ``dask.array``.

    Parameters
    ----------
    net : FullyConnected or Serial
    x1 : array_like, shape (N1, ...) of network inputs
    x2 : array_like, shape (N2, ...), optional
        None: ``x1`` (blocks on both sides of the diagonal are computed, as cross blocks).
    kind : "ntk" or "nngp"
    chunks : int >= 1, or a pair of ints
        Rows of x1 and of x2 per block (a pair gives them separately).

    Returns
    -------
    dask.array.Array, shape (N1, N2)
        Of the inputs' dtype (float32 when every input is float32, float64 otherwise).  Each
        block is ``net.kernels(x1[I], x2[J])`` of its kind, computed where the graph runs
        (the workers of a ``distributed.Client``); the inputs enter the graph once, a chunk
        of rows at a time.
    """
    net = _network(net)
    kind = choice(kind, "kind", _KERNELS)
    if isinstance(chunks, tuple) and len(chunks) == 2:
        rows1, rows2 = _chunk_rows(chunks[0], "chunks[0]"), _chunk_rows(chunks[1], "chunks[1]")
    else:
        rows1 = rows2 = _chunk_rows(chunks, "chunks")
    dtype = resolve_dtype(None, x1, x2)
    a = _network_inputs(net, x1, "x1").astype(dtype, copy=False)
    b = a if x2 is None else _network_inputs(net, x2, "x2", like=a, same_shape=True).astype(dtype, copy=False)
    # One block of the feature axes: every kernel block sees whole points.
    left = da.from_array(a.reshape(a.shape[0], -1), chunks=(rows1, -1))
    right = left if x2 is None and rows1 == rows2 else da.from_array(b.reshape(b.shape[0], -1), chunks=(rows2, -1))
    shape = a.shape[1:]
    return da.blockwise(
        _reshaped_block, "ij", left, "ik", right, "jk", dtype=dtype, concatenate=True, net=net, kind=kind, shape=shape
    )


def _reshaped_block(a: np.ndarray, b: np.ndarray, net, kind: str, shape: tuple) -> np.ndarray:
    return _gram_block(a.reshape((-1, *shape)), b.reshape((-1, *shape)), net, kind)


def _row_product(net, kernel: str, x1, lo: int, hi: int, x2, v: np.ndarray) -> np.ndarray:
    """``K(x1[lo:hi], x2) @ v`` on a worker (x2 None: x1)."""
    return _product(net, kernel, x1[lo:hi], x1 if x2 is None else x2, v, _worker_threads(), None)


def _landmark_block(net, kernel: str, x, lo: int, hi: int, z) -> np.ndarray:
    return next(_rows(net, kernel, x[lo:hi], z, _worker_threads(), hi - lo))[2]


class _ClusterTiles:
    """The kernel passes of ``KernelRegression.fit`` on a Dask cluster (see the module)."""

    def __init__(self, client, net, kernel: str, x: np.ndarray, threads: int):
        if not isinstance(client, distributed.Client):
            raise TypeError(f"client must be a distributed.Client, got {type(client).__name__}")
        self.client, self.net, self.kernel, self.n = client, net, kernel, x.shape[0]
        workers = max(1, len(client.scheduler_info().get("workers", {})))
        self.rows = max(128, math.ceil(self.n / (4 * workers)))
        self.x = client.scatter(x, broadcast=True, hash=False)

    def _blocks(self, n: int):
        return [(lo, min(lo + self.rows, n)) for lo in range(0, n, self.rows)]

    def _gather(self, futures: list, progress) -> list:
        """Results of futures in order; progress(done, total) as they finish; cancelled on
        an interruption."""
        try:
            done = 0
            for _ in distributed.as_completed(futures):
                done += 1
                if progress is not None:
                    progress(done, len(futures))
            return self.client.gather(futures)
        finally:
            self.client.cancel([f for f in futures if not f.done()])

    def _products(self, x1, n1: int, x2, v: np.ndarray, progress) -> np.ndarray:
        vf = self.client.scatter(v, broadcast=True, hash=False)
        futures = [
            self.client.submit(_row_product, self.net, self.kernel, x1, lo, hi, x2, vf, pure=False)
            for lo, hi in self._blocks(n1)
        ]
        return np.concatenate(self._gather(futures, progress), axis=0)

    def train(self, v: np.ndarray, progress) -> np.ndarray:
        return self._products(self.x, self.n, None, v, progress)

    def cross(self, x_other: np.ndarray, v: np.ndarray, progress) -> np.ndarray:
        xo = self.client.scatter(x_other, broadcast=True, hash=False)
        return self._products(xo, x_other.shape[0], self.x, v, progress)

    def landmark_rows(self, z: np.ndarray):
        zf = self.client.scatter(z, broadcast=True, hash=False)
        blocks = self._blocks(self.n)
        futures = [
            self.client.submit(_landmark_block, self.net, self.kernel, self.x, lo, hi, zf, pure=False)
            for lo, hi in blocks
        ]
        for (lo, hi), block in zip(blocks, self._gather(futures, None)):
            yield lo, hi, block

    def close(self) -> None:
        self.x = None  # the workers drop the scattered points with the last reference
