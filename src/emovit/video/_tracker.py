"""`Tracker`: gives each face a track id that stays the same from frame to frame.

Each track remembers where its face was last seen and how fast it moved (pixels per second of
video time, so the sampling rate does not matter). On a new frame every track's box is moved
by its velocity to where the face should be now, and detections are assigned to tracks by the
Hungarian algorithm (`scipy.optimize.linear_sum_assignment`) over a cost that combines the
overlap (IoU) with the predicted box and the distance to the predicted or last-seen box.
Two faces that cross keep their ids because each one's prediction follows its own motion; a
face that is not found keeps its id for ``track_buffer`` analysed frames (its box coasts on).

Examples:
    >>> tracker = Tracker()
    >>> tracker.update([(0, 0, 10, 10), (50, 0, 60, 10)], 0.0)
    [1, 2]
    >>> tracker.update([(52, 0, 62, 10), (1, 0, 11, 10)], 0.04)
    [2, 1]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from emovit.errors import DependencyError

__all__ = ["Tracker"]

Box = Sequence[float]
_INVALID = 1e6
#: What leaving a track unmatched (or starting a track for a detection) costs: a match is made
#: only when it costs less than leaving both its sides alone (2x this). Without it the solver
#: maximised the number of matches first, so a face that had not moved could hand its id to a
#: neighbour to let a lost track take a newcomer.
_UNMATCHED = 1.0


def _with_unmatched(cost: np.ndarray) -> np.ndarray:
    """`cost` (tracks x detections) padded so that each track may stay unmatched and each
    detection may start a track, at `_UNMATCHED` each (dummy pairs cost nothing)."""
    tracks, detections = cost.shape
    padded = np.full((tracks + detections, detections + tracks), _INVALID)
    padded[:tracks, :detections] = cost
    padded[np.arange(tracks), detections + np.arange(tracks)] = _UNMATCHED
    padded[tracks + np.arange(detections), np.arange(detections)] = _UNMATCHED
    padded[tracks:, detections:] = 0.0
    return padded


@dataclass
class _Track:
    id: int
    box: np.ndarray  # x1, y1, x2, y2 where the face was last seen
    time: float  # when it was last seen
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))  # of the centre, px/s
    hits: int = 1
    misses: int = 0

    def predict(self, time: float) -> np.ndarray:
        shift = self.velocity * (time - self.time)
        return self.box + np.array([shift[0], shift[1], shift[0], shift[1]])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _centre(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


def _side(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], box[3] - box[1], 1.0))


class Tracker:
    """Associates face boxes frame to frame and numbers the tracks from 1.

    Args:
        track_buffer: analysed frames a track survives without a detection.
        min_iou: overlap with the predicted box that allows a match on its own.
        max_distance: centre distance (in face sizes) from the predicted or last-seen box that
            allows a match without overlap (a face found again after a miss).
        max_scale: largest ratio between the areas of a track's box and a detection's.
        velocity_weight: weight of the newest motion measurement in the velocity estimate.
    """

    def __init__(
        self,
        track_buffer: int = 30,
        *,
        min_iou: float = 0.1,
        max_distance: float = 1.0,
        max_scale: float = 4.0,
        velocity_weight: float = 0.5,
    ) -> None:
        self.track_buffer = track_buffer
        self.min_iou, self.max_distance, self.max_scale = min_iou, max_distance, max_scale
        self.velocity_weight = velocity_weight
        self.tracks: list[_Track] = []
        self.removed: list[int] = []  # the ids dropped by the last update
        self._next_id = 1

    def _cost(self, track: _Track, box: np.ndarray, time: float) -> float:
        predicted = track.predict(time)
        area_ratio = ((box[2] - box[0]) * (box[3] - box[1])) / max(
            (predicted[2] - predicted[0]) * (predicted[3] - predicted[1]), 1e-9
        )
        if not 1 / self.max_scale <= area_ratio <= self.max_scale:
            return _INVALID
        overlap = _iou(predicted, box)
        size = _side(predicted)
        distance = (
            min(
                float(np.linalg.norm(_centre(predicted) - _centre(box))),
                float(np.linalg.norm(_centre(track.box) - _centre(box))),
            )
            / size
        )
        if overlap < self.min_iou and distance > self.max_distance:
            return _INVALID
        return (1.0 - overlap) + 0.5 * min(distance, 2.0)

    def update(self, boxes: Sequence[Box], time_s: float) -> list[int]:
        """Assign the `boxes` found at `time_s` (seconds) to tracks; returns their track ids,
        in the order of `boxes`. Every analysed frame must be passed, faces or not."""
        try:
            from scipy.optimize import linear_sum_assignment
        except ImportError:
            raise DependencyError("scipy", "video", "face tracking") from None
        detections = [np.asarray(box, dtype=np.float64) for box in boxes]
        ids: list[int] = [0] * len(detections)
        matched_tracks: set[int] = set()
        if self.tracks and detections:
            cost = np.array([[self._cost(t, d, time_s) for d in detections] for t in self.tracks])
            rows, cols = linear_sum_assignment(_with_unmatched(cost))
            for row, col in zip(rows, cols, strict=True):
                if row >= cost.shape[0] or col >= cost.shape[1] or cost[row, col] >= _INVALID:
                    continue  # a track left unmatched, or a detection that starts a track
                track = self.tracks[row]
                self._observe(track, detections[col], time_s)
                ids[col] = track.id
                matched_tracks.add(row)
        self.removed = []
        kept: list[_Track] = []
        for row, track in enumerate(self.tracks):
            if row not in matched_tracks:
                track.misses += 1
                if track.misses > self.track_buffer:
                    self.removed.append(track.id)
                    continue
            kept.append(track)
        self.tracks = kept
        for col, box in enumerate(detections):
            if ids[col] == 0:
                track = _Track(self._next_id, box, time_s)
                self._next_id += 1
                self.tracks.append(track)
                ids[col] = track.id
        return ids

    def _observe(self, track: _Track, box: np.ndarray, time: float) -> None:
        elapsed = time - track.time
        if elapsed > 0:
            measured = (_centre(box) - _centre(track.box)) / elapsed
            weight = 1.0 if track.hits == 1 else self.velocity_weight
            track.velocity = weight * measured + (1 - weight) * track.velocity
        track.box, track.time = box, time
        track.hits += 1
        track.misses = 0
