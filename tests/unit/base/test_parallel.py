import os

import cv2

from fracture.base.parallel import parallel_map


def _parent_pid(_: int) -> int:
    cv2.setNumThreads(1)  # hung forever in workers forked from a parent that had used OpenCV's thread pool
    return os.getppid()


def test_results_keep_input_order():
    assert list(parallel_map(abs, [-3, 1, -2, 5, -8], workers=2)) == [3, 1, 2, 5, 8]


def test_workers_are_not_forked_from_the_threaded_caller():
    # Regression: preprocess deadlocked when workers were fork()ed from a process running torch / OpenCV
    # threads. Workers now come from a forkserver, so their parent is never the caller.
    cv2.setNumThreads(2)
    cv2.resize(cv2.UMat(64, 64, cv2.CV_8U).get(), (32, 32))
    parents = set(parallel_map(_parent_pid, list(range(8)), workers=2))
    assert os.getpid() not in parents


def test_single_worker_runs_in_process():
    assert list(parallel_map(_own_pid, [0, 1], workers=1)) == [os.getpid()] * 2


def _own_pid(_: int) -> int:
    return os.getpid()
