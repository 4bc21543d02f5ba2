import pytest

from emovit.errors import LabelError
from emovit.labels import EMOTIONS, LabelMap, canonical_label
from emovit.models import REFERENCE_ID2LABEL


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("happy", "happy"),
        ("HAPPY", "happy"),
        ("Happiness", "happy"),
        ("anger", "angry"),
        (" Sadness ", "sad"),
        ("surprised", "surprise"),
        ("Fearful", "fear"),
        ("disgusted", "disgust"),
        ("neutral", "neutral"),
        ("contempt", None),
        ("", None),
    ],
)
def test_canonical_label(raw: str, expected: str | None) -> None:
    assert canonical_label(raw) == expected


def test_reference_order_maps_by_name() -> None:
    labels = LabelMap.from_id2label({str(k): v for k, v in REFERENCE_ID2LABEL.items()})
    assert labels.names == ("sad", "disgust", "angry", "neutral", "fear", "surprise", "happy")
    assert labels.ordered_names == EMOTIONS
    # id of each emotion in result order: angry is id 2, disgust 1, fear 4, happy 6, ...
    assert labels.order == (2, 1, 4, 6, 3, 0, 5)
    assert labels.missing == ()
    assert labels.unknown == ()


def test_aliases_and_unknown_labels_are_kept() -> None:
    labels = LabelMap.from_id2label({0: "Contempt", 1: "Happiness", 2: "ANGER", 3: "Sadness"})
    assert labels.names == ("contempt", "happy", "angry", "sad")
    assert labels.ordered_names == ("angry", "happy", "sad", "contempt")
    assert labels.unknown == ("contempt",)
    assert labels.missing == ("disgust", "fear", "neutral", "surprise")


def test_two_ids_with_one_meaning_are_refused() -> None:
    with pytest.raises(LabelError, match="both mean 'happy'"):
        LabelMap.from_id2label({0: "happy", 1: "Happiness"})


def test_a_near_synonym_beside_its_emotion_is_a_class_of_its_own() -> None:
    """RAVDESS's eight classes hold "neutral" and "calm": the checkpoint was refused as two
    labels meaning neutral; "calm" alone still reads as neutral, and "None" is no emotion."""
    ravdess = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
    labels = LabelMap.from_id2label(dict(enumerate(ravdess)))
    assert labels.names == ("neutral", "calm", "happy", "sad", "angry", "fear", "disgust", "surprise")
    assert labels.unknown == ("calm",)
    assert LabelMap.from_id2label({0: "calm", 1: "happy"}).names == ("neutral", "happy")
    assert LabelMap.from_id2label({0: "Neutral", 1: "None"}).names == ("neutral", "none")


@pytest.mark.parametrize("id2label", [{0: "a", 2: "b"}, {"x": "a"}])
def test_bad_ids_are_refused(id2label: dict) -> None:
    with pytest.raises(LabelError):
        LabelMap.from_id2label(id2label)
