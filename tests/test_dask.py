"""ntkcore.dask on a LocalCluster of 2 worker processes: Gram blocks and distributed pcg equal
the single-machine results (issue 14).  Small sizes: CI has 2 cores."""

import numpy as np
import pytest

pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import ntkcore  # noqa: E402
import ntkcore.dask as nd  # noqa: E402
from ntkcore import layers  # noqa: E402

NET = ntkcore.FullyConnected(3, "relu", W_std=2**0.5, b_std=0.1)


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None)
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def points(n, d=5, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d))


def rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("kind", ["ntk", "nngp"])
def test_gram_blocks_equal_the_single_machine_gram(client, kind):
    x = points(157)
    g = nd.gram(NET, x, kind=kind, chunks=40)
    assert g.shape == (157, 157) and g.chunks[0] == (40, 40, 40, 37)
    assert rel(g.compute(), getattr(NET.kernels(x), kind)) < 1e-12


def test_cross_gram_with_separate_chunks_and_float32(client):
    x1, x2 = points(70, seed=1), points(55, seed=2)
    g = nd.gram(NET, x1, x2, chunks=(30, 20))
    assert g.chunks == ((30, 30, 10), (20, 20, 15))
    assert rel(g.compute(), NET.ntk(x1, x2)) < 1e-12
    single = nd.gram(NET, x1.astype(np.float32), x2.astype(np.float32), chunks=32).compute()
    assert single.dtype == np.float32
    np.testing.assert_array_equal(single, NET.ntk(x1.astype(np.float32), x2.astype(np.float32)))


def test_gram_of_a_serial_network(client):
    net = ntkcore.serial(layers.Conv((3, 3), padding="SAME", W_std=1.4), "relu", layers.GlobalAvgPool(), layers.Dense())
    x = np.random.default_rng(0).standard_normal((9, 4, 4, 2))
    assert rel(nd.gram(net, x, chunks=4).compute(), net.ntk(x)) < 1e-12


def test_gram_rejects_bad_arguments():
    with pytest.raises(ValueError, match="kind must be"):
        nd.gram(NET, points(5), kind="rbf")
    with pytest.raises(ValueError, match="chunks must be"):
        nd.gram(NET, points(5), chunks=0)
    with pytest.raises(TypeError, match="net must be"):
        nd.gram("relu", points(5))


@pytest.mark.parametrize("k", [None, 2])
def test_distributed_pcg_equals_the_single_machine_one(client, k):
    x, x_test = points(500), points(30, seed=5)
    rng = np.random.default_rng(6)
    y = rng.standard_normal(500) if k is None else rng.standard_normal((500, k))
    local = ntkcore.KernelRegression(NET, diag_reg=1e-3, solver="pcg", tol=1e-11).fit(x, y)
    calls = []
    spread = ntkcore.KernelRegression(
        NET, diag_reg=1e-3, solver="pcg", tol=1e-11, client=client, progress=lambda d, t: calls.append((d, t))
    ).fit(x, y)
    assert spread.solver_ == "pcg" and spread.residual_ <= 1e-11
    np.testing.assert_array_equal(spread.landmarks_, local.landmarks_)
    assert rel(spread.predict(x_test), local.predict(x_test)) < 1e-8
    assert calls and calls[-1][0] == calls[-1][1]


def test_auto_with_a_client_is_pcg(client):
    x = points(200)
    model = ntkcore.KernelRegression(NET, client=client).fit(x, np.ones(200))
    assert model.solver_ == "pcg"


def test_a_client_must_be_a_distributed_client():
    with pytest.raises(TypeError, match=r"distributed\.Client"):
        ntkcore.KernelRegression(NET, solver="pcg", client="tcp://host:8786").fit(points(10), np.ones(10))


def test_the_core_on_a_worker_uses_the_workers_threads(client):
    assert client.submit(nd._worker_threads).result() == 1
    assert nd._worker_threads() == 0  # off a worker: all OpenMP offers


# --- eigsh on the cluster ------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["largest", "smallest"])
def test_eigsh_on_the_cluster_equals_the_single_machine_solve(client, which):
    x = points(230, seed=3)
    local = ntkcore.eigsh(NET, x, k=3, which=which, max_passes=4000)
    values, vectors = ntkcore.eigsh(NET, x, k=3, which=which, max_passes=4000, client=client)
    assert rel(values, local[0]) < 1e-10
    # Eigenvectors of simple eigenvalues agree up to sign.
    np.testing.assert_allclose(np.abs(np.sum(vectors * local[1], axis=0)), 1.0, atol=1e-8)


def test_eigsh_on_the_cluster_of_a_serial_network_never_forms_the_gram_locally(client):
    net = ntkcore.serial(layers.Conv((3, 3), padding="SAME", W_std=1.4), "relu", layers.GlobalAvgPool(), layers.Dense())
    x = np.random.default_rng(4).standard_normal((30, 4, 4, 2))
    calls = []
    values = ntkcore.eigsh(
        net, x, k=2, client=client, return_eigenvectors=False, progress=lambda d, t: calls.append((d, t))
    )
    assert rel(values, np.linalg.eigvalsh(net.ntk(x))[-2:]) < 1e-10
    assert calls and calls[-1][0] == calls[-1][1]


def test_eigsh_rejects_a_client_that_is_not_one():
    with pytest.raises(TypeError, match=r"client must be a distributed\.Client"):
        ntkcore.eigsh(NET, points(20), k=2, client="tcp://127.0.0.1:8786")
