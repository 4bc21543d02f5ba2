"""The user cache for detector models: verified, atomic downloads.

Files live in ``$EMOVIT_HOME/models/`` (default: the platform cache dir, e.g.
``~/.cache/emovit/models``). A download goes to a temporary file in that folder, is checked
against its sha256, and only then renamed into place; a file with the wrong hash is deleted
and reported. `install` puts a local copy in place offline, after the same check.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from emovit.errors import DownloadError
from emovit.fileio import atomic_open, sha256_of

__all__ = ["YUNET", "DownloadError", "RemoteFile", "emovit_home", "fetch", "install", "sha256_of"]


@dataclass(frozen=True)
class RemoteFile:
    """A file emovit may download: where from, its name in the cache and its sha256."""

    url: str
    filename: str
    sha256: str
    url_env: str = ""  # an environment variable that overrides the URL (mirrors, tests)

    def resolved_url(self) -> str:
        return os.environ.get(self.url_env, "") or self.url if self.url_env else self.url


YUNET = RemoteFile(
    url="https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/face_detection_yunet_2023mar.onnx",
    filename="face_detection_yunet_2023mar.onnx",
    sha256="8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
    url_env="EMOVIT_YUNET_URL",
)


def emovit_home() -> Path:
    """``$EMOVIT_HOME``, else the platform's user cache dir for emovit."""
    env = os.environ.get("EMOVIT_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("emovit"))


def cached_path(remote: RemoteFile) -> Path:
    return emovit_home() / "models" / remote.filename


def fetch(remote: RemoteFile, *, timeout: float = 30.0, allow_download: bool = True) -> Path:
    """Return the verified cached file, downloading it first when needed.

    Raises:
        DownloadError: no network (and not cached), or the file's sha256 is wrong.
    """
    target = cached_path(remote)
    try:
        if target.is_file():
            if sha256_of(target) == remote.sha256:
                return target
            target.unlink()  # a corrupted cache entry: fetch it again
    except OSError as exc:
        raise DownloadError(f"cannot read the cache entry {target}: {exc}") from None
    if not allow_download:
        raise DownloadError(f"{remote.filename} is not in the cache ({target.parent})")
    url = remote.resolved_url()
    try:  # the cache's own folder first: its failure is not the network's
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create the cache folder {target.parent}: {exc}") from None
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            _copy_verified(
                response,
                target,
                remote.sha256,
                f"downloaded {remote.filename} from {url}:",
                "the file was deleted",
            )
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise DownloadError(f"cannot download {remote.filename} from {url}: {exc}") from None
    return target


def install(remote: RemoteFile, source: str | os.PathLike[str]) -> Path:
    """Copy a local copy of `remote` (fetched on another machine) into the cache, checking its
    sha256 on the way; for machines without network. Returns the cached file.

    Raises:
        DownloadError: `source` is missing or is not the expected file (nothing is installed).
    """
    path = Path(source)
    if not path.is_file():
        what = "not a regular file" if path.exists() else "no such file"
        raise DownloadError(f"{path}: {what}", option="source")
    target = cached_path(remote)
    try:
        with path.open("rb") as handle:
            what = f"{path} is not {remote.filename}:"
            _copy_verified(handle, target, remote.sha256, what, "nothing was installed", option="source")
    except OSError as exc:
        raise DownloadError(f"cannot install {path} into the cache {target.parent}: {exc}") from None
    return target


def _copy_verified(
    stream: BinaryIO, target: Path, sha256: str, what: str, outcome: str, option: str | None = None
) -> None:
    """Copy `stream` into `target` atomically; the file appears only if its sha256 matches."""
    with atomic_open(target, "wb") as out:
        digest = hashlib.sha256()
        while block := stream.read(1 << 20):
            digest.update(block)
            out.write(block)
        if digest.hexdigest() != sha256:
            raise DownloadError(
                f"{what} its sha256 is {digest.hexdigest()}, expected {sha256}; {outcome}", option=option
            )
