"""Long computations release the GIL and stop on Ctrl-C (KeyboardInterrupt)."""

import _thread
import threading
import time

import ntkcore
import numpy as np
import pytest

BIG = np.random.default_rng(0).standard_normal((6000, 16))
SLOW = ntkcore.FullyConnected(300, "relu", W_std=1.4, b_std=0.1)  # tens of seconds


def test_keyboard_interrupt_stops_a_long_computation():
    timer = threading.Timer(0.3, _thread.interrupt_main)
    start = time.perf_counter()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        SLOW.kernels(BIG, n_threads=2)
    timer.join()
    # Responsiveness, not speed: the run would take far longer than this to finish.
    assert time.perf_counter() - start < 10


def test_gil_is_released_while_computing():
    net = ntkcore.FullyConnected(20, "erf", W_std=1.5, b_std=0.1)
    worker = threading.Thread(target=net.kernels, args=(BIG[:3000],), kwargs={"n_threads": 1})
    worker.start()
    python_steps = 0
    while worker.is_alive():
        python_steps += 1
    worker.join()
    assert python_steps > 1000
