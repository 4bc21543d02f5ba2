import subprocess
import sys

import emovit


def test_all_is_sorted_and_resolves() -> None:
    assert emovit.__all__ == sorted(emovit.__all__)
    for name in emovit.__all__:
        assert getattr(emovit, name) is not None


def test_import_is_light_and_side_effect_free() -> None:
    code = (
        "import os, sys, warnings; before = dict(os.environ); filters = list(warnings.filters);"
        "import emovit;"
        "heavy = [m for m in ('torch', 'transformers', 'PIL', 'numpy', 'cv2') if m in sys.modules];"
        "assert not heavy, heavy;"
        "assert dict(os.environ) == before; assert warnings.filters == filters"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_errors_share_one_base() -> None:
    for name in ("ImageError", "ModelLoadError", "LabelError", "NoFaceError", "DependencyError"):
        assert issubclass(getattr(emovit, name), emovit.EmovitError)
