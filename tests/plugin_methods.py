"""User-registered methods used by the tests (the plugin mechanism a user would use)."""
import os
import time

import numpy as np

from simstudy import Method, register


@register("test-flaky")
class Flaky(Method):
    """Raises on replicates whose first training outcome is positive, else scores X3."""

    def fit(self, train):
        if train["Y"].iloc[0] > 0:
            raise RuntimeError("deliberate failure for the test")
        return self

    def benefit_score(self, frame):
        return frame["X3"].to_numpy()


@register("test-random")
class RandomScore(Method):
    """Scores from the method's own seed: shows per-method seeding is reproducible."""

    def fit(self, train):
        self.rng_ = np.random.default_rng(self.random_state)
        return self

    def benefit_score(self, frame):
        return self.rng_.standard_normal(len(frame))


@register("test-slow")
class Slow(Method):
    """Sleeps SIMSTUDY_TEST_SLEEP seconds per fit (to kill a run mid-way in a test)."""

    def fit(self, train):
        time.sleep(float(os.environ.get("SIMSTUDY_TEST_SLEEP", "0.2")))
        return self

    def benefit_score(self, frame):
        return frame["X3"].to_numpy() + 0.3


@register("test-envfail")
class EnvFail(Method):
    """Fails while SIMSTUDY_TEST_FAIL is set (a transient cause: memory, a missing file)."""

    def fit(self, train):
        if os.environ.get("SIMSTUDY_TEST_FAIL"):
            raise MemoryError("deliberate transient failure for the test")
        return self

    def benefit_score(self, frame):
        return frame["X3"].to_numpy()


class UncompletedJobError(RuntimeError):
    """Stands in for submitit's exception at a SLURM job's time limit (same module root)."""


UncompletedJobError.__module__ = "submitit.core.utils"
_WALLTIME_FITS = [0]


@register("test-walltime")
class Walltime(Method):
    """Raises the job-time-limit exception at its SIMSTUDY_TEST_WALLTIME-th fit in a process."""

    def fit(self, train):
        _WALLTIME_FITS[0] += 1
        if _WALLTIME_FITS[0] == int(os.environ.get("SIMSTUDY_TEST_WALLTIME", "0")):
            raise UncompletedJobError("Job not requeued because: timed-out too many times")
        return self

    def benefit_score(self, frame):
        return frame["X3"].to_numpy()


@register("test-broken")
class Broken(Method):
    """Fails on every replicate (as a method with an option that cannot work would)."""

    def fit(self, train):
        raise ValueError("deliberate failure on every replicate (column X9 is missing)")


@register("test-threshold")
class Threshold(Method):
    """A fixed rule, learned from nothing: treat when X3 > 0.3 (value claims' calibration)."""

    def benefit_score(self, frame):
        return frame["X3"].to_numpy() - 0.3
