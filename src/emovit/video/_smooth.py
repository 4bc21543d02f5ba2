"""`ProbabilitySmoother`: exponential smoothing of each track's probabilities over video time.

The weight of a new frame is ``1 - exp(-dt / tau)``, with ``dt`` the seconds since the track's
previous frame and ``tau`` the time constant (``smooth``): the result depends on how much video
time passed, not on how many frames were analysed, so ``--fps 5`` and every frame smooth alike.
A track's first frame is taken as it is; ``tau = 0`` turns smoothing off.

Examples:
    >>> import numpy as np
    >>> smoother = ProbabilitySmoother(0.3)
    >>> smoother.update(1, np.array([1.0, 0.0]), 0.0).tolist()
    [1.0, 0.0]
    >>> [round(v, 3) for v in smoother.update(1, np.array([0.0, 1.0]), 0.1)]
    [0.717, 0.283]
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

__all__ = ["ProbabilitySmoother"]


class ProbabilitySmoother:
    """Per-track exponential moving average of probability vectors, time-based.

    Args:
        seconds: the time constant tau (0: no smoothing).
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._state: dict[int, tuple[np.ndarray, float]] = {}

    def update(self, track_id: int, probs: np.ndarray, time_s: float) -> np.ndarray:
        """The smoothed probabilities of `track_id` after its frame at `time_s`."""
        previous = self._state.get(track_id)
        if previous is None or self.seconds <= 0:
            smoothed = np.asarray(probs, dtype=np.float64)
        else:
            state, then = previous
            weight = 1.0 - math.exp(-max(time_s - then, 0.0) / self.seconds)
            smoothed = state + weight * (np.asarray(probs, dtype=np.float64) - state)
        self._state[track_id] = (smoothed, time_s)
        return smoothed

    def forget(self, track_ids: Iterable[int]) -> None:
        """Drop the state of tracks that ended."""
        for track_id in track_ids:
            self._state.pop(track_id, None)
