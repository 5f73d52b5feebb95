"""Where a sweep's cells run: a pool of local worker processes, or Ray tasks on a Ray cluster.

Both take plain-data jobs, call ``fn`` (``sim.sweep.run_cell``) on each in another process and hand
every outcome to ``done(job, outcome)`` in this process as it arrives, in whatever order cells finish.
A worker that dies (killed, out of memory) loses the cells it was running: they are run again, up to
``retries`` times each, then reported as ``{"status": "lost"}``. Each worker computes on one core
(``simulate`` limits BLAS to one thread), so ``workers`` is the number of cores used.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from zo_edge.errors import ZoEdgeError


def lost(detail: str) -> dict:
    return {"status": "lost", "error": f"the worker running this cell was lost ({detail}); a rerun tries it again"}


def _ignore_interrupts() -> None:
    """Workers leave Ctrl-C to the sweep, which stops them: no traceback from every worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class LocalEngine:
    """``workers`` processes on this machine (spawned: a fresh interpreter, no inherited threads).
    On Ctrl-C the sweep stops its workers at once; the cells they were running are simply not written."""

    def __init__(self, workers: int, retries: int):
        self.workers, self.retries = workers, retries

    def run(self, fn, jobs, done) -> None:
        pending, attempts = list(jobs), {}
        while pending:
            pool = ProcessPoolExecutor(max_workers=min(self.workers, len(pending)),
                                       mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_ignore_interrupts)
            futures = {pool.submit(fn, job): job for job in pending}
            pending = []
            try:
                while futures:
                    finished, _ = wait(futures, return_when=FIRST_COMPLETED)
                    for future in finished:
                        job = futures.pop(future)
                        try:
                            outcome = future.result()
                        except BrokenProcessPool:  # a worker died: every cell not yet returned is lost with it
                            attempts[job["key"]] = attempts.get(job["key"], 0) + 1
                            if attempts[job["key"]] <= self.retries:
                                pending.append(job)
                            else:
                                done(job, lost(f"{attempts[job['key']]} attempts"))
                            continue
                        done(job, outcome)
            except BaseException:
                processes = list((getattr(pool, "_processes", None) or {}).values())  # no terminate_workers() before 3.14
                pool.shutdown(wait=False, cancel_futures=True)
                for process in processes:
                    process.terminate()
                raise
            pool.shutdown(wait=True)


class RayEngine:
    """Ray tasks of one CPU each: on a new local cluster of ``workers`` CPUs, or on ``address``'s."""

    def __init__(self, workers: int, address: str | None, retries: int):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ZoEdgeError("--engine ray needs Ray: pip install 'zo-edge[ray]' (or --engine local)") from None
        self.workers, self.address, self.retries = workers, address, retries

    def run(self, fn, jobs, done) -> None:
        import logging

        import ray

        started_here = not ray.is_initialized()
        if started_here:
            try:
                if self.address:
                    ray.init(address=self.address, logging_level=logging.ERROR, log_to_driver=False)
                else:
                    # the local cluster's workers inherit this environment: make them import the very code
                    # this process runs (a runtime_env would do the same 3 s slower)
                    code = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
                    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (code, os.environ.get("PYTHONPATH")) if p)
                    ray.init(num_cpus=self.workers, include_dashboard=False, logging_level=logging.ERROR,
                             log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"the Ray cluster at {self.address}" if self.address else "a local Ray cluster"
                raise ZoEdgeError(f"could not start or reach {where}: {' '.join(str(exc).split())}") from None
        try:
            task = ray.remote(num_cpus=1, max_retries=self.retries)(fn)
            refs = {task.remote(job): job for job in jobs}
            try:
                self._collect(ray, refs, done)
            except BaseException:  # Ctrl-C: the cluster's other users get their CPUs back
                for ref in refs:
                    ray.cancel(ref, force=True)
                raise
        finally:
            if started_here:
                ray.shutdown()

    @staticmethod
    def _collect(ray, refs: dict, done) -> None:
        while refs:
            finished, _ = ray.wait(list(refs), num_returns=1)
            for ref in finished:
                job = refs.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayError as exc:  # a worker or node lost past its retries
                    outcome = lost(type(exc).__name__)
                done(job, outcome)


def make_engine(name: str, workers: int, ray_address=None, retries: int = 1):
    if name == "local":
        if ray_address:
            raise ZoEdgeError("--ray-address needs --engine ray")
        return LocalEngine(workers, retries)
    if name == "ray":
        return RayEngine(workers, ray_address, retries)
    raise ZoEdgeError(f"unknown engine {name!r}; choose local or ray")
