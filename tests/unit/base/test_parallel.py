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


_MAP_UNTIL_KILLED = """
import sys, time
from fracture.base import parallel
from fracture.base.parallel import parallel_map

parallel.WORKER_MODULES = ()  # the same pool without preloading the steps' heavy imports (seconds on 2 cores)

def slow(x):
    time.sleep(0.2)
    return x

if __name__ == "__main__":
    for _ in parallel_map(slow, list(range(100)), workers=2, chunksize=1):
        print("decoded", flush=True)
"""


def test_sigkill_of_the_step_leaves_no_worker_forkserver_or_tracker(tmp_path):
    # Was: after `kill -9` of preprocess mid-decode, the forkserver, the resource tracker and both workers ran
    # forever (about 375 MB each time): every one of them held another's pipe open, so none saw EOF.
    import signal
    import subprocess
    import sys
    import time

    import psutil

    script = tmp_path / "map_until_killed.py"
    script.write_text(_MAP_UNTIL_KILLED)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, env=env, cwd=tmp_path)
    try:
        assert proc.stdout.readline() == b"decoded\n"  # the pool is up and a worker has returned a result
        helpers = psutil.Process(proc.pid).children(recursive=True)
        assert len(helpers) >= 3  # forkserver, resource tracker, two workers
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 15
        while (alive := [p for p in helpers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.1)
        assert not alive, [" ".join(p.cmdline())[-80:] for p in alive]
    finally:
        for p in psutil.Process().children(recursive=True):  # only this test's own leftovers, by pid
            if p.pid == proc.pid or p in helpers:
                p.kill()
        proc.stdout.close()
