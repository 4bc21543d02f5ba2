"""Labelled datasets: ImageFolder trees and the FER2013 CSV, FER+ vote labels, leak audit.

Examples:
    >>> from emovit.data import majority_label, VOTE_CLASSES
    >>> majority_label([0, 0, 0, 8, 2, 0, 0, 0, 0, 0])
    'happy'
"""

from emovit.data.audit import DEFAULT_MAX_DISTANCE, AuditReport, audit, find_leaks, hash_samples
from emovit.data.datasets import (
    FER2013_CSV_LABELS,
    LabelledImages,
    Sample,
    canonical_split,
    class_counts,
    decode_samples,
    list_splits,
    read_samples,
)
from emovit.data.votes import (
    VOTE_CLASSES,
    VoteLabels,
    majority_label,
    majority_samples,
    read_vote_labels,
    sample_votes,
    vote_distribution,
    vote_targets,
)

__all__ = [
    "DEFAULT_MAX_DISTANCE",
    "FER2013_CSV_LABELS",
    "VOTE_CLASSES",
    "AuditReport",
    "LabelledImages",
    "Sample",
    "canonical_split",
    "VoteLabels",
    "audit",
    "class_counts",
    "decode_samples",
    "find_leaks",
    "hash_samples",
    "list_splits",
    "majority_label",
    "majority_samples",
    "read_samples",
    "read_vote_labels",
    "sample_votes",
    "vote_distribution",
    "vote_targets",
]
