"""Scale-out batch inference on Ray Data: the predictor, one copy per actor, over a cluster.

Ray only distributes the work; every row comes from `EmotionRecognizer` (decode, faces,
preprocess, model, postprocess, as locally) and is built by `emovit.writers.result_rows`, the
function the local ``--format jsonl`` writer uses, so both engines give the same rows.

Two entry points:

* `predict_dataset`: a Ray Dataset of paths or bytes in, a Dataset of result rows out
  (`result_schema`), through ``map_batches`` with `BatchPredictor`, a callable class that loads
  the model once per actor (an actor pool: ``workers`` actors, ``num_cpus`` / ``num_gpus`` each).
* `predict_to_folder`: a list of inputs (paths, ``s3://`` / ``gs://`` / ``file://`` URLs,
  videos) into an output folder of Parquet or JSONL files, exactly once, resumable (what
  ``emovit predict --engine ray`` runs).

Exactly once: the driver cuts the inputs into parts (``part_size`` photos, or one video);
an actor writes each part's rows to ``part-<hash of its inputs>.parquet`` through a hidden
temporary name and a rename, so a part retried by Ray (its actor died, or the write failed)
replaces its file instead of adding a second one. The driver commits a part by writing
``_manifest/<part>.json`` (its inputs, rows, errors and video summaries) once Ray hands back the
part's result; a part file without a manifest entry (from an attempt Ray gave up on, or a
driver stopped between the two writes) is deleted before a resumed run, whose inputs are
then analysed again. ``resume=True`` skips the inputs listed in the manifest.

Bounded retries: a part is tried `PART_TRIES` times (Ray Data alone would retry a part whose
actor dies for ever); a part given up is split, and an input that kills its worker alone too
becomes a ``worker_failed`` error row.

Examples:
    >>> import ray  # doctest: +SKIP
    >>> paths = ray.data.from_items([{"path": p} for p in ["a.jpg", "b.png"]])  # doctest: +SKIP
    >>> rows = predict_dataset(paths, "default", faces=FaceOptions(detector="none"))  # doctest: +SKIP
    >>> rows.take(1)[0]["label"]  # doctest: +SKIP
    'happy'
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import io
import json
import os
import re
import socket
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, unquote, urlsplit

from emovit.errors import ImageError, InputError, OptionError, StorageError
from emovit.results import FrameResult, ImageResult
from emovit.sources import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, is_url
from emovit.writers import result_rows

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.fs as pafs
    import ray.data

    from emovit.faces import FaceOptions
    from emovit.predictor import EmotionRecognizer
    from emovit.video import VideoOptions

__all__ = [
    "BatchPredictor",
    "JobReport",
    "PART_SIZE",
    "PART_TRIES",
    "PartError",
    "REMOTE_SCHEMES",
    "RowFormat",
    "check_output_folder",
    "done_inputs",
    "expand_remote",
    "predict_dataset",
    "predict_to_folder",
    "read_results",
    "result_schema",
]

RowFormat = Literal["parquet", "jsonl"]
#: Photos per output file (and per unit of work that Ray retries as a whole).
PART_SIZE = 256
#: Tries of a part (an actor that dies, a crash or out of memory, is restarted by Ray and the
#: part tried again); a part that fails them all is split, and an input that fails alone as
#: often becomes an error row (``worker_failed``) instead of stalling the run.
PART_TRIES = 3
#: Rows of a video handed on together (to its part's file) as its frames are analysed.
_ROW_CHUNK = 4096
#: The largest remote photo read (photos are read whole into the actor's memory, a part's at a
#: time; local files and videos are streamed instead).
MAX_READ_BYTES = 256 * 1024**2
#: URL schemes read through pyarrow's filesystems (on the workers, into emovit's decoder).
REMOTE_SCHEMES = frozenset({"s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss", "file"})
_MANIFEST = "_manifest"  # readers (pyarrow, Spark, DuckDB globs on part-*) skip names starting with _
_EXTENSIONS: dict[str, str] = {"parquet": ".parquet", "jsonl": ".jsonl"}


# ---------------------------------------------------------------------------- the schema


def result_schema() -> pa.Schema:
    """The one Arrow schema of every result row (Parquet files and `predict_dataset`).

    A row is what ``emovit predict --format jsonl`` writes, plus ``kind``: ``image`` rows (one
    per photo) fill ``image_size``, ``faces`` and ``timings_ms``; ``frame`` rows (one per
    analysed video frame and face, as locally) fill ``frame``, ``time_s``, ``track_id``, ``box``,
    ``raw_probs`` and ``detection_score``. Probabilities are ``map<string, double>`` (label to
    probability), so one schema serves every model's labels."""
    import pyarrow as pa

    probs = pa.map_(pa.string(), pa.float64())
    top_k = pa.list_(pa.struct([("label", pa.string()), ("score", pa.float64())]))
    box = pa.list_(pa.int64())
    face = pa.struct(
        [
            ("label", pa.string()),
            ("score", pa.float64()),
            ("probs", probs),
            ("box", box),
            ("landmarks", pa.list_(pa.list_(pa.float64()))),
            ("detection_score", pa.float64()),
            ("track_id", pa.int64()),
            ("raw_probs", probs),
            ("top_k", top_k),
        ]
    )
    return pa.schema(
        [
            ("kind", pa.string()),
            ("source", pa.string()),
            ("ok", pa.bool_()),
            ("error", pa.string()),
            ("error_code", pa.string()),
            ("error_stage", pa.string()),
            ("image_size", pa.list_(pa.int64())),
            ("frame", pa.int64()),
            ("time_s", pa.float64()),
            ("track_id", pa.int64()),
            ("box", box),
            ("label", pa.string()),
            ("score", pa.float64()),
            ("probs", probs),
            ("raw_probs", probs),
            ("detection_score", pa.float64()),
            ("top_k", top_k),
            ("faces", pa.list_(face)),
            ("timings_ms", pa.map_(pa.string(), pa.float64())),
        ]
    )


_IMAGE_FIELDS: tuple[str, ...] = (
    "source",
    "ok",
    "error",
    "error_code",
    "error_stage",
    "image_size",
    "label",
    "score",
)
_IMAGE_FIELDS += ("probs", "faces", "timings_ms")
_FRAME_FIELDS: tuple[str, ...] = (
    "source",
    "ok",
    "error",
    "error_code",
    "error_stage",
    "frame",
    "time_s",
    "track_id",
)
_FRAME_FIELDS += ("box", "label", "score", "probs", "raw_probs", "detection_score")
_MAPS = ("probs", "raw_probs", "timings_ms")


def _to_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    import pyarrow as pa

    return pa.Table.from_pylist(list(rows), schema=result_schema())


def _kind(row: dict[str, Any], kind: str) -> dict[str, Any]:
    return {"kind": kind, **row}


def _from_arrow(row: dict[str, Any]) -> dict[str, Any]:
    """A row read from Parquet as the local jsonl writer writes it (maps back to dicts, only
    the fields of its kind)."""

    def maps(item: dict[str, Any]) -> dict[str, Any]:
        for key in _MAPS:
            if isinstance(item.get(key), list):
                item[key] = dict(item[key])
        return item

    if row["kind"] == "frame":
        out = maps({key: row[key] for key in _FRAME_FIELDS})
        if row.get("top_k") is not None:
            out["top_k"] = row["top_k"]
        return out
    out = maps({key: row[key] for key in _IMAGE_FIELDS})
    faces = []
    for face in out["faces"] or []:
        face = maps(dict(face))
        if face["track_id"] is None and face["raw_probs"] is None:
            del face["track_id"], face["raw_probs"]
        if face["top_k"] is None:
            del face["top_k"]
        faces.append(face)
    out["faces"] = faces
    return out


# ---------------------------------------------------------------------------- inputs


def _remote(source: str) -> bool:
    return is_url(source) and urlsplit(source).scheme.lower() in REMOTE_SCHEMES


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and path of a local path or a URL it reads (s3, gs, file, …)."""
    import pyarrow.fs as pafs

    if is_url(uri):
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def _is_video(source: str) -> bool:
    from emovit.video import is_video

    if _remote(source):
        return PurePosixPath(urlsplit(source).path).suffix.lower() in VIDEO_EXTENSIONS
    return is_video(source)


def expand_remote(sources: Iterable[str], *, videos: bool = True, recursive: bool = True) -> list[str]:
    """Expand the folders among `sources` that are URLs of pyarrow filesystems (``s3://``,
    ``gs://``, ``file://``, …) into their photos and videos (sorted; with `recursive`, those of
    their sub-folders too); every other source is kept as it is
    (`emovit.sources.expand_sources` expands local ones).

    Examples:
        >>> expand_remote(["a.jpg"])
        ['a.jpg']
    """
    import pyarrow.fs as pafs

    extensions = IMAGE_EXTENSIONS | (VIDEO_EXTENSIONS if videos else frozenset())
    out: list[str] = []
    for source in sources:
        if not _remote(source):
            out.append(source)
            continue
        try:
            fs, path = pafs.FileSystem.from_uri(source)
            if fs.get_file_info(path).type != pafs.FileType.Directory:
                out.append(source)
                continue
            found = fs.get_file_info(pafs.FileSelector(path, recursive=recursive))
        except Exception:  # noqa: BLE001 - credentials, network, a bad URL: read, it becomes an error row
            out.append(source)
            continue
        names = sorted(
            info.path
            for info in found
            if info.type == pafs.FileType.File
            and PurePosixPath(info.path).suffix.lower() in extensions
            and not PurePosixPath(info.path).name.startswith(".")
        )
        out.extend(_url_of(source, path, name) for name in names)
    return out


def _url_of(root_url: str, root_path: str, path: str) -> str:
    """The URL of `path`, listed by the filesystem of `root_url` (whose path is `root_path`)."""
    scheme, netloc = urlsplit(root_url)[:2]
    # a name with a space, '#', '?' or '%' stays one path (read unquoted); the characters URLs
    # allow in a path stay as they are
    path = quote(path, safe="/!$&'()*+,;=:@~")
    if scheme == "file" or not netloc or root_path.startswith(netloc):  # s3, gs: the bucket is in the path
        return f"{scheme}://{path}" if path.startswith("/") or scheme != "file" else f"file:///{path}"
    return f"{scheme}://{netloc}/{path.lstrip('/')}"


class _Reader:
    """Reads remote inputs into named in-memory files, a few at a time, caching filesystems;
    a file over `max_bytes` is an error row, not read (a part's photos are held in memory)."""

    def __init__(self, max_bytes: int | None = MAX_READ_BYTES) -> None:
        self._filesystems: dict[str, Any] = {}
        self.max_bytes = max_bytes

    def filesystem(self, url: str) -> tuple[Any, str]:
        """The (cached) pyarrow filesystem of `url` and the path of `url` on it."""
        import pyarrow.fs as pafs

        parts = urlsplit(url)
        key = f"{parts.scheme}://{parts.netloc}"
        if key not in self._filesystems:
            self._filesystems[key] = pafs.FileSystem.from_uri(url)[0]
        fs = self._filesystems[key]
        path = unquote(parts.path)  # percent-encoded, as pyarrow's from_uri reads it when listing
        if parts.scheme in ("s3", "gs", "gcs"):  # pyarrow's paths there start with the bucket
            return fs, f"{parts.netloc}{path}"
        return fs, path

    def read(self, url: str) -> io.BytesIO | ImageResult:
        """The file as a `BytesIO` named `url` (emovit's decoder reads it), or the error row of
        a file that cannot be read."""
        limit = self.max_bytes
        try:
            fs, path = self.filesystem(url)
            with fs.open_input_file(path) as handle:
                size = handle.size()
                data = handle.read() if limit is None or size <= limit else b""
        except FileNotFoundError:
            return ImageResult(source=url).fail(ImageError(url, "no such file", "not_found"))
        except (OSError, ValueError) as exc:
            error = ImageError(url, f"cannot read the file ({exc})", "not_found")
            return ImageResult(source=url).fail(error)
        if limit is not None and size > limit:
            error = ImageError(
                url, f"the file has {size:,} bytes, over the limit of {limit:,} (max_bytes)", "too_large"
            )
            return ImageResult(source=url).fail(error)
        buffer = io.BytesIO(data)
        buffer.name = url  # describe_source names the result by it
        return buffer


# ---------------------------------------------------------------------------- the actor


class BatchPredictor:
    """The callable class that Ray Data runs in each actor: one `EmotionRecognizer` per actor
    (loaded once, in ``__init__``), called on batches of inputs.

    A batch is an Arrow table (or a dict of columns) with ``path`` (local paths or URLs of
    pyarrow filesystems; bytes for names that are not UTF-8) and/or ``bytes`` (the files'
    bytes; ``path`` then names them); a column ``item`` (`ray.data.from_items` of strings) is
    read as ``path``. It returns an Arrow table of result rows (`result_schema`): one per
    photo, one per analysed frame and face of a video (``path`` with a video extension).

    Args:
        model: Hub id, local folder or registry name (as `EmotionRecognizer.from_pretrained`).
        faces: the face options (`FaceOptions`).
        video: the video options (`emovit.video.VideoOptions`).
        top_k: add each face's top `top_k` labels to its row.
        num_cpus: the actor's CPUs: its torch / onnxruntime threads unless ``threads`` is given.
        max_bytes: the largest remote photo read (bigger ones are ``too_large`` error rows);
            None for no limit.
        recognizer: more `EmotionRecognizer` options (``batch_size``, ``device``, ``backend``,
            ``precision``, ``threads``, ``max_pixels``, ``tta``).

    Examples:
        >>> ds.map_batches(BatchPredictor, fn_constructor_kwargs={"model": "default"},  # doctest: +SKIP
        ...                batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=4))
    """

    def __init__(
        self,
        model: str = "default",
        *,
        faces: FaceOptions | None = None,
        video: VideoOptions | None = None,
        top_k: int | None = None,
        num_cpus: float = 1,
        max_bytes: int | None = MAX_READ_BYTES,
        recognizer: dict[str, Any] | None = None,
    ) -> None:
        from transformers.utils import logging as hf_logging

        from emovit.errors import RandomWeightsWarning
        from emovit.predictor import EmotionRecognizer

        hf_logging.disable_progress_bar()
        options = dict(recognizer or {})
        if options.get("threads") is None:
            options["threads"] = max(1, int(num_cpus))
        with warnings.catch_warnings():  # the driver tells the user, once
            warnings.simplefilter("ignore", RandomWeightsWarning)
            self.rec: EmotionRecognizer = EmotionRecognizer.from_pretrained(model, faces=faces, **options)
        self.video = video
        self.top_k = top_k
        self.reader = _Reader(max_bytes)
        self._fetch = ThreadPoolExecutor(4, thread_name_prefix="emovit-fetch")

    def __call__(self, batch: Any) -> pa.Table:
        columns = _columns(batch)
        paths: list[str | None] = [
            os.fsdecode(p) if isinstance(p, bytes) else p
            for p in columns.get("path") or columns.get("item") or []
        ]
        blobs: list[bytes | None] = list(columns.get("bytes") or [])
        count = max(len(paths), len(blobs))
        paths = paths or [None] * count
        blobs = blobs or [None] * count
        rows: list[dict[str, Any]] = []
        images: list[Any] = []
        for path, blob in zip(paths, blobs, strict=True):
            if path is not None and _is_video(path):
                rows += self._photo_rows(images)
                images = []
                rows += self.video_rows(path if blob is None else io.BytesIO(blob), path)[0]
            elif blob is not None:
                images.append(_named(blob, path))
            else:
                images.append(path)
        rows += self._photo_rows(images)
        return _to_table(rows)

    def _photo_rows(self, sources: Sequence[Any]) -> list[dict[str, Any]]:
        return [_kind(row, "image") for result in self.photos(sources) for row in self.rows(result)]

    def rows(self, result: ImageResult) -> list[dict[str, Any]]:
        """The result's rows, by the local jsonl writer's function."""
        return result_rows(result, self.top_k)

    def photos(self, sources: Sequence[Any]) -> Iterator[ImageResult]:
        """One result per photo, in order: local paths and in-memory files go to the predictor
        as they are; remote URLs are read first (a few at a time) and decoded by emovit."""
        remote = {i: s for i, s in enumerate(sources) if isinstance(s, str) and _remote(s)}
        fetched = dict(zip(remote, self._fetch.map(self.reader.read, remote.values()), strict=True))
        ready = [fetched.get(i, s) for i, s in enumerate(sources)]
        results = self.rec.stream([s for s in ready if not isinstance(s, ImageResult)])
        for item in ready:
            yield item if isinstance(item, ImageResult) else next(results)

    def video_rows(
        self, source: Any, name: str, sink: Callable[[list[dict[str, Any]]], None] | None = None
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The rows of every analysed frame of one video, and its summary (as locally). With a
        `sink`, the rows go to it a few thousand at a time as the frames are analysed (and the
        list returned is empty): a long video's rows never sit in memory together."""
        from emovit.video import is_camera

        collected: list[dict[str, Any]] = []
        add = sink or collected.extend
        if is_camera(source):  # it would run for ever, on whichever machine the worker is
            error = InputError(
                name, "a live camera is not read by a batch job (it never ends; run it with "
                "`emovit predict` or `EmotionRecognizer.predict_video`)", "unsupported_input",
            )  # fmt: skip
            rows, summary = _failed_video(name, error, self.top_k)
            add(rows)
            return collected, summary
        if isinstance(source, str) and _remote(source):
            try:
                fs, path = self.reader.filesystem(source)
                source = fs.open_input_file(path)
            except (OSError, ValueError) as exc:
                error = ImageError(name, f"cannot read the file ({exc})", "not_found")
                rows, summary = _failed_video(name, error, self.top_k)
                add(rows)
                return collected, summary
        run = self.rec.predict_video(source, options=self.video, name=name)
        try:
            pending: list[dict[str, Any]] = []
            for frame in run:
                pending += [_kind(row, "frame") for row in self.rows(frame)]
                if len(pending) >= _ROW_CHUNK:
                    add(pending)
                    pending = []
            if pending:
                add(pending)
        finally:
            run.close()
            if hasattr(source, "close") and not isinstance(source, str):
                source.close()
        return collected, run.summary()


def _failed_video(
    name: str, error: InputError, top_k: int | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The error row and summary of a video that could not be analysed at all."""
    from emovit.video import VideoSummary

    failed = FrameResult(source=name).fail(error)
    summary = VideoSummary(source=name, labels=(), error=failed.error, error_code=failed.error_code)
    return [_kind(row, "frame") for row in result_rows(failed, top_k)], summary.to_dict()


def _named(blob: bytes, name: str | None) -> Any:
    if name is None:
        return blob
    buffer = io.BytesIO(blob)
    buffer.name = name
    return buffer


def _columns(batch: Any) -> dict[str, list[Any]]:
    """A batch (Arrow table, pandas frame or dict of numpy columns) as lists of Python values."""
    if hasattr(batch, "column_names") and hasattr(batch, "to_pydict"):
        return dict(batch.to_pydict())
    if hasattr(batch, "to_dict") and hasattr(batch, "columns"):
        return {str(key): list(values) for key, values in batch.to_dict("list").items()}
    return {str(key): [getattr(v, "item", lambda v=v: v)() if getattr(v, "ndim", None) == 0 else v
                       for v in values] for key, values in batch.items()}  # fmt: skip


class _PartWriter(BatchPredictor):
    """A `BatchPredictor` that writes each part (a row ``part``, ``inputs``, ``video``) to its
    file in the output folder, through a temporary name and a rename, and returns one
    summary row per part for the driver to commit (``failure`` set when the part could not be
    written, or raised: the driver stops the run with `PartError`)."""

    def __init__(self, output: str, fmt: RowFormat, registry: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fs, self.base = _filesystem(output)
        self.fmt = fmt
        if registry is not None:  # the driver ends this actor itself after the pass
            import ray

            ray.get(ray.get_actor(registry).add.remote(ray.get_runtime_context().current_actor))

    def __call__(self, batch: Any) -> pa.Table:
        import pyarrow as pa

        columns = _columns(batch)
        out: list[dict[str, Any]] = []
        for part, encoded, video in zip(columns["part"], columns["inputs"], columns["video"], strict=True):
            inputs = [os.fsdecode(name) for name in encoded]
            start = time.perf_counter()
            summaries: list[dict[str, Any]] = []
            spool = _Spool(self.fmt)  # the part's rows, on local disk as they come
            try:
                if video:
                    summaries.append(self.video_rows(inputs[0], inputs[0], sink=spool.add)[1])
                else:
                    spool.add(
                        [_kind(row, "image") for result in self.photos(inputs) for row in self.rows(result)]
                    )
                spool.close()
                _put(self.fs, self.base, part, spool.copy_to)
                problem = None
            except Exception as exc:  # noqa: BLE001 - the storage or a bug, not an input (inputs
                # fail as error rows): handed back for the driver to stop the run with, neither
                # retried by Ray nor mistaken for a dead worker
                problem = f"{type(exc).__name__}: {exc}"
            finally:
                spool.discard()
            out.append(
                {
                    "part": part,
                    "failure": problem,
                    "rows": spool.rows,
                    "errors": spool.errors,
                    "summaries": json.dumps(summaries),
                    "seconds": time.perf_counter() - start,
                    "worker": f"{os.uname().nodename}:{os.getpid()}",
                }
            )
        schema = pa.schema(
            [
                ("part", pa.string()),
                ("failure", pa.string()),
                ("rows", pa.int64()),
                ("errors", pa.int64()),
                ("summaries", pa.string()),
                ("seconds", pa.float64()),
                ("worker", pa.string()),
            ]
        )
        return pa.Table.from_pylist(out, schema=schema)


def _write_part(fs: Any, base: str, name: str, rows: list[dict[str, Any]], fmt: RowFormat) -> None:
    """Write `rows` to ``base/name`` (see `_put`)."""
    spool = _Spool(fmt)
    try:
        spool.add(rows)
        spool.close()
        _put(fs, base, name, spool.copy_to)
    finally:
        spool.discard()


#: A spool untouched this long (seconds) may be swept once its process is gone: a live one is
#: written a chunk at a time, and another container sharing the folder has other pids.
_STALE_SPOOL_S = 3600.0


def _spool_prefix() -> str:
    """A spool file's name: its host and process, for `_sweep_spools` to judge."""
    host = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:64]
    return f".emovit-part-{host}-{os.getpid()}-"


def _sweep_spools(folder: str) -> None:
    """Delete the spool files of this host's actors that are gone: one killed mid-part (a lost
    node, Ctrl-C) left its file in the temporary folder for good. Only files of this host
    name, of a process that no longer runs, untouched for an hour (a container sharing the
    folder sees other pids)."""
    import glob

    prefix = _spool_prefix().rsplit("-", 2)[0] + "-"  # this host's, any process
    for path in glob.glob(os.path.join(glob.escape(folder), glob.escape(prefix) + "*-*.tmp")):
        pid = os.path.basename(path)[len(prefix) :].split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            if time.time() - os.path.getmtime(path) > _STALE_SPOOL_S:
                os.unlink(path)


@functools.cache
def _sweep_spools_once(folder: str) -> None:
    """`_sweep_spools`, once per process and folder (not a listing of the folder per part)."""
    _sweep_spools(folder)


class _Spool:
    """A part's rows in a local temporary file, added a chunk at a time (Parquet row groups, or
    JSONL lines as the local writer writes them): what is held in memory is one chunk."""

    def __init__(self, fmt: RowFormat) -> None:
        import tempfile

        _sweep_spools_once(tempfile.gettempdir())
        handle, self.path = tempfile.mkstemp(prefix=_spool_prefix(), suffix=".tmp")
        os.close(handle)
        self.fmt, self.rows, self.errors = fmt, 0, 0
        self._writer: Any = None
        self._file: Any = None
        if fmt == "parquet":
            import pyarrow.parquet as pq

            self._writer = pq.ParquetWriter(self.path, result_schema())
        else:
            self._file = open(self.path, "wb")  # noqa: SIM115 - closed by close()

    def add(self, rows: list[dict[str, Any]]) -> None:
        self.rows += len(rows)
        self.errors += sum(not row["ok"] for row in rows)
        if not rows:
            return
        if self._writer is not None:
            self._writer.write_table(_to_table(rows))
        else:
            self._file.write(
                "".join(
                    json.dumps({k: v for k, v in row.items() if k != "kind"}) + "\n" for row in rows
                ).encode()
            )

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def copy_to(self, stream: Any) -> None:
        with open(self.path, "rb") as source:
            while chunk := source.read(1 << 20):
                stream.write(chunk)

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def _put(fs: Any, base: str, name: str, write: Callable[[Any], None]) -> None:
    """Write ``base/name`` with ``write(stream)`` through a hidden temporary file and a rename:
    a reader never sees half a file, and a part written again (Ray retried it) replaces its
    file. A failed write is tried twice more (storage hiccups) before it fails the run."""
    for attempt in range(PART_TRIES):
        temporary = f"{base}/.{name}.{uuid.uuid4().hex}.tmp"
        try:
            with fs.open_output_stream(temporary) as stream:
                write(stream)
            fs.move(temporary, f"{base}/{name}")
            return
        except OSError:
            with contextlib.suppress(OSError):
                fs.delete_file(temporary)
            if attempt + 1 == PART_TRIES:
                raise
            time.sleep(0.5 * 4**attempt)


# ---------------------------------------------------------------------------- the datasets


@contextlib.contextmanager
def _bounded_retries() -> Iterator[dict[str, Any]]:
    """The actor options of a map: a dead actor is always replaced, but a task (a batch, a
    part) is tried `PART_TRIES` times, not Ray Data's unlimited default, so that an input that
    kills its worker every time cannot stall a run for ever. Ray 2.60 deprecates passing them
    this way but has no named parameter for them yet: its warning is silenced here only."""
    from ray.util.annotations import RayDeprecationWarning

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated", RayDeprecationWarning)
        yield {"max_restarts": -1, "max_task_retries": PART_TRIES - 1}


def _compute(
    workers: int | tuple[int, int] | None,
    num_cpus: float,
    num_gpus: float,
    tasks: int | None = None,
    in_flight: int | None = None,
    spare_cpus: float = 0,
) -> Any:
    """The actor pool: `workers` actors, or one per `num_cpus` CPUs (`num_gpus` GPUs) of the
    cluster; never more than `tasks` (an actor with nothing to do only costs its start);
    `in_flight` tasks sent to an actor at a time (default: Ray Data's).

    `spare_cpus`: CPUs the dataset's other stages need (a user's dataset reads its files in
    tasks of 1 CPU). Actors that took every CPU of the cluster left that read task waiting for
    ever: the default pool leaves them free, and a fixed `workers` that would take them is
    made smaller, with a warning (a ``(min, max)`` range is left to Ray, for clusters that grow).
    """
    import ray
    import ray.data

    cpus = _cluster_cpus()
    room = max(1, int((cpus - spare_cpus) // max(num_cpus, 1e-9))) if not num_gpus else None
    if workers is None:
        if num_gpus:
            gpus = ray.cluster_resources().get("GPU", 1) if ray.is_initialized() else 1
            workers = max(1, int(gpus // num_gpus))
        else:
            workers = room or 1
    elif isinstance(workers, int) and room is not None and spare_cpus and workers > room:
        warnings.warn(
            f"{workers} workers of {num_cpus:g} CPU would take all {cpus:g} CPUs of the Ray cluster, "
            f"and its read stage would wait for ever: using {room}; pass workers=(1, {workers}) "
            "for a cluster that adds nodes",
            stacklevel=3,
        )
        workers = room
    if isinstance(workers, tuple):
        return ray.data.ActorPoolStrategy(
            min_size=workers[0], max_size=workers[1], max_tasks_in_flight_per_actor=in_flight
        )
    size = max(1, min(workers, tasks or workers))
    return ray.data.ActorPoolStrategy(size=size, max_tasks_in_flight_per_actor=in_flight)


def _cluster_cpus() -> float:
    """The CPUs of the Ray cluster (this machine's before ray.init)."""
    import ray

    return float(ray.cluster_resources().get("CPU", 1) if ray.is_initialized() else os.cpu_count() or 1)


def _actor_cpus(
    num_cpus: float, num_gpus: float, spare_cpus: float, workers: int | tuple[int, int] | None
) -> float:
    """The CPUs each actor reserves: `num_cpus`, unless the cluster is too small to keep
    `spare_cpus` for the dataset's read tasks beside one such actor (a 1-CPU cluster: the actor
    took its only CPU and the read task waited for ever). Then the pool's one actor reserves
    what is left (none on 1 CPU) and shares the CPU with the reads, with a warning. A
    ``(min, max)`` pool keeps `num_cpus`: actors reserving nothing would neither be bounded by
    the CPUs nor ask an autoscaling cluster for nodes."""
    cpus = _cluster_cpus()
    if num_gpus or isinstance(workers, tuple) or cpus - spare_cpus >= num_cpus:
        return num_cpus
    fitted = max(0.0, cpus - spare_cpus)
    warnings.warn(
        f"the Ray cluster has {cpus:g} CPU(s): an actor reserving {num_cpus:g} would leave the "
        f"dataset's read tasks none; it reserves {fitted:g} and shares the CPU with them "
        f"(its model still runs {max(1, int(num_cpus))} thread(s))",
        stacklevel=3,
    )
    return fitted


def predict_dataset(
    dataset: ray.data.Dataset,
    model: str = "default",
    *,
    faces: FaceOptions | None = None,
    video: VideoOptions | None = None,
    workers: int | tuple[int, int] | None = None,
    num_cpus: float = 1,
    num_gpus: float = 0,
    batch_size: int = 16,
    top_k: int | None = None,
    max_bytes: int | None = MAX_READ_BYTES,
    **recognizer: Any,
) -> ray.data.Dataset:
    """Result rows (`result_schema`) for a Dataset of inputs: a column ``path`` (local paths,
    ``s3://`` / ``gs://`` URLs; videos by extension) or ``bytes`` (with ``path`` naming them,
    as `ray.data.read_binary_files(..., include_paths=True)` gives), or ``item`` (strings).

    Each actor of the pool (`workers` of them: a number, a ``(min, max)`` range to autoscale,
    default one per `num_cpus` CPUs of the cluster but one, or per `num_gpus` GPUs; a number
    whose actors would take every CPU is lowered, with a warning, so that the dataset's own read
    tasks still get a CPU; on a cluster of one CPU the one actor reserves none and shares it) loads
    the model
    once and classifies `batch_size` inputs per call; a broken input becomes its error row, as
    locally. A batch whose actor dies is tried `PART_TRIES` times in all, then fails the
    dataset (`predict_to_folder` instead isolates such an input as a ``worker_failed`` row).
    Remote photos over `max_bytes` are ``too_large`` rows. `recognizer` takes
    `EmotionRecognizer`'s other options (``device``, ``backend``, ``precision``, ``threads``,
    ``max_pixels``, ``tta``). Videos give their frame rows (``kind`` "frame") only: their
    summaries come with `predict_to_folder` (``JobReport.summaries``), which also gives each
    video a task of its own (here a video shares its batch, and its retries, with the batch's
    other inputs).

    Examples:
        >>> files = ray.data.read_binary_files("s3://b/faces/", include_paths=True)  # doctest: +SKIP
        >>> rows = predict_dataset(files, faces=FaceOptions(detector="none"), workers=8)  # doctest: +SKIP
        >>> rows.write_parquet("s3://b/results/")  # doctest: +SKIP
    """
    if batch_size < 1:
        raise OptionError(f"batch_size must be at least 1, got {batch_size}", option="batch_size")
    kwargs: dict[str, Any] = {"model": model, "faces": faces, "video": video, "top_k": top_k}
    kwargs |= {"num_cpus": num_cpus, "max_bytes": max_bytes}
    kwargs["recognizer"] = {"batch_size": batch_size, **recognizer}
    reserved = _actor_cpus(num_cpus, num_gpus, spare_cpus=1, workers=workers)  # the dataset's reads
    with _bounded_retries() as retries:  # a batch that kills its actor every time fails the dataset
        return dataset.map_batches(
            BatchPredictor,
            fn_constructor_kwargs=kwargs,
            batch_size=batch_size,
            batch_format="pyarrow",
            compute=_compute(workers, num_cpus, num_gpus, spare_cpus=1),
            num_cpus=reserved,
            num_gpus=num_gpus or None,
            **retries,
        )


# ---------------------------------------------------------------------------- the folder job


class PartError(StorageError):
    """A part failed in its worker for a reason that is not one of its inputs (the output
    storage, or a bug), or its manifest entry could not be written: `predict_to_folder` stops;
    committed parts stay, ``resume`` goes on."""


@dataclass
class JobReport:
    """What a `predict_to_folder` run did: this run's rows and errors, the inputs it skipped
    (already in the output), its time and its workers."""

    inputs: int
    skipped: int = 0
    duplicates: int = 0
    rows: int = 0
    errors: int = 0
    #: error rows the folder already held for the skipped inputs (written by earlier runs)
    earlier_errors: int = 0
    parts: int = 0
    seconds: float = 0.0
    workers: int = 0
    output: str = ""
    summaries: list[dict[str, Any]] = field(default_factory=list)
    #: inputs whose worker died on every try, alone (their error rows say ``worker_failed``)
    failed_inputs: list[str] = field(default_factory=list)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """The final line: rows, errors, rows/s, workers."""
        text = (
            f"ray: {self.rows:,} rows ({self.errors:,} errors) from {self.inputs - self.skipped:,} inputs "
            f"in {self.seconds:.1f} s: {self.rows_per_s:,.1f} rows/s on {self.workers} workers"
        )
        if self.skipped:
            text += f"; {self.skipped:,} inputs skipped (already in {self.output}"
            n = self.earlier_errors
            text += f", with {n:,} error row{'s' * (n != 1)})" if n else ")"
        if self.duplicates:
            text += f"; {self.duplicates:,} repeated inputs analysed once"
        if self.failed_inputs:
            names = ", ".join(self.failed_inputs[:3]) + (", ..." if len(self.failed_inputs) > 3 else "")
            count = len(self.failed_inputs)
            text += f"; {count:,} inputs killed their worker on every try ({names}): worker_failed rows"
        return text


def _part_name(inputs: Sequence[str], fmt: RowFormat) -> str:
    """A part's file name: a hash of its inputs' keys (`_input_key`), so that a retried part
    rewrites its own file, and a relative path resumed from another folder (another input)
    never takes the name of a committed part."""
    keys = "\0".join(_input_key(source) for source in inputs)
    digest = hashlib.sha256(keys.encode("utf-8", "surrogateescape")).hexdigest()
    return f"part-{digest[:24]}{_EXTENSIONS[fmt]}"


def _encode(names: Sequence[str]) -> list[bytes]:
    """Names as bytes for Arrow (a file name that is not UTF-8 holds surrogate escapes)."""
    return [os.fsencode(name) for name in names]


def _unit(inputs: Sequence[str], fmt: RowFormat, *, video: bool) -> dict[str, Any]:
    """One part: its file name, its inputs (as bytes for Arrow) and whether it is a video."""
    return {"part": _part_name(inputs, fmt), "inputs": _encode(inputs), "video": video}


def _units(inputs: Sequence[str], part_size: int, fmt: RowFormat) -> list[dict[str, Any]]:
    """The parts of a run: each video alone, the photos `part_size` at a time, in order."""
    units: list[dict[str, Any]] = []
    photos: list[str] = []

    def flush() -> None:
        if photos:
            units.append(_unit(photos, fmt, video=False))
            photos.clear()

    for source in inputs:
        if _is_video(source):
            units.append(_unit([source], fmt, video=True))
            continue
        photos.append(source)
        if len(photos) == part_size:
            flush()
    flush()
    return units


def _manifest(fs: Any, base: str) -> list[dict[str, Any]]:
    """The committed parts of an output folder."""
    import pyarrow.fs as pafs

    folder = f"{base}/{_MANIFEST}"
    if fs.get_file_info(folder).type != pafs.FileType.Directory:
        return []
    entries = []
    for info in fs.get_file_info(pafs.FileSelector(folder)):
        if info.type != pafs.FileType.File or not info.base_name.startswith("part-"):
            continue  # the run's settings (`_SETTINGS`), temporaries
        if not info.base_name.endswith(".json"):
            continue
        with fs.open_input_stream(info.path) as handle:
            entries.append(json.loads(handle.read().decode()))
    return entries


def _input_key(source: str) -> str:
    """How an input is recognised across runs and within one: a URL as given, a local path
    made absolute (``photos/a.jpg`` and ``./photos/a.jpg`` are one input, and a run resumed
    from another folder, with absolute paths, still finds what is done)."""
    return source if is_url(source) else os.path.abspath(source)


def _entry_keys(entry: dict[str, Any]) -> list[str]:
    """The input keys a manifest entry commits (entries written before keys were recorded:
    their inputs, taken relative to this folder)."""
    return list(entry.get("keys") or (_input_key(source) for source in entry["inputs"]))


def done_inputs(output: str) -> set[str]:
    """The inputs whose rows an output folder already holds (those of committed parts), which
    ``resume`` skips; not those that killed their worker (``worker_failed``: tried again)."""
    fs, base = _filesystem(output)
    entries = [entry for entry in _manifest(fs, base) if not entry.get("worker_failed")]
    return {source for entry in entries for source in entry["inputs"]}


def _commit(fs: Any, base: str, entry: dict[str, Any]) -> None:
    name = entry["part"].rsplit(".", 1)[0] + ".json"
    _write_json(fs, f"{base}/{_MANIFEST}/{name}", entry, f"the manifest entry of {entry['part']}")


def _write_json(fs: Any, path: str, value: Any, what: str) -> None:
    """Write `value` to `path` through a temporary name and a rename, tried again on an object
    store's passing refusal (throttling); a `StorageError` naming `what` when it keeps failing."""
    folder, name = path.rsplit("/", 1)
    data = json.dumps(value, indent=1).encode()
    try:
        _put(fs, folder, name, lambda stream: stream.write(data))
    except OSError as exc:
        raise StorageError(f"{folder}: {what} could not be written ({exc})") from exc


# The names emovit writes into an output folder: parts (`_part_name`) and their temporaries.
_PART = re.compile(r"part-[0-9a-f]{24}\.(parquet|jsonl)")
_PART_TEMPORARY = re.compile(r"\.part-[0-9a-f]{24}\.(parquet|jsonl)\.[0-9a-zA-Z]+\.tmp")


def _foreign(fs: Any, base: str) -> list[str]:
    """What in the output folder emovit did not write (sorted names)."""
    import pyarrow.fs as pafs

    if fs.get_file_info(base).type == pafs.FileType.NotFound:
        return []
    names = (info.base_name for info in fs.get_file_info(pafs.FileSelector(base)))
    # the sweep deletes only emovit's own names, so hidden files and the ones file browsers
    # leave (.DS_Store, Thumbs.db, desktop.ini) are harmless
    ignored = {_MANIFEST, "Thumbs.db", "desktop.ini"}
    return sorted(n for n in names if n not in ignored and not n.startswith(".") and not _PART.fullmatch(n))


def _sweep(fs: Any, base: str, committed: set[str]) -> int:
    """Delete the part files no manifest entry commits, and temporaries (an interrupted run's);
    only names emovit writes, never another file. How many."""
    import pyarrow.fs as pafs

    removed = 0
    for info in fs.get_file_info(pafs.FileSelector(base)):
        name = info.base_name
        stray = _PART.fullmatch(name) is not None and name not in committed
        temporary = _PART_TEMPORARY.fullmatch(name) is not None
        if info.type == pafs.FileType.File and (stray or temporary):
            fs.delete_file(info.path)
            removed += 1
    return removed


def _singles(unit: dict[str, Any], fmt: RowFormat) -> list[dict[str, Any]]:
    """A part's inputs as parts of one input each."""
    return [_unit([os.fsdecode(n)], fmt, video=unit["video"]) for n in unit["inputs"]]


class _Actors:
    """Keeps the handles of a pass's actors (each adds itself when it starts, again after a
    restart), for the driver to end them when the pass is over. Ray Data leaves that to
    reference counting, which misses an actor caught restarting (its last part killed it):
    such an actor lived on, holding its CPUs, and the next pass waited for them for ever."""

    def __init__(self) -> None:
        self.handles: dict[str, Any] = {}

    def add(self, handle: Any) -> None:
        self.handles[handle._actor_id.hex()] = handle

    def take(self) -> list[Any]:
        handles, self.handles = list(self.handles.values()), {}
        return handles


class _PartRun:
    """Runs parts on an actor pool and commits each part Ray hands back; returns the parts
    that failed every try."""

    def __init__(
        self,
        fs: Any,
        base: str,
        kwargs: dict[str, Any],
        workers: int | None,
        num_cpus: float,
        num_gpus: float,
        committed: set[str],
        report: JobReport,
    ) -> None:
        import ray

        self.fs, self.base, self.workers = fs, base, workers
        self.num_cpus, self.num_gpus, self.committed, self.report = num_cpus, num_gpus, committed, report
        name = f"emovit-parts-{uuid.uuid4().hex}"
        self.registry: Any = ray.remote(num_cpus=0)(_Actors).options(name=name).remote()
        self.kwargs = kwargs | {"registry": name}

    def close(self) -> None:
        import ray

        ray.kill(self.registry)

    def __call__(self, units: list[dict[str, Any]]) -> list[dict[str, Any]]:
        import ray
        import ray.data

        # one part in flight per actor: a part that kills its actor takes no queued part with it
        compute = _compute(self.workers, self.num_cpus, self.num_gpus, tasks=len(units), in_flight=1)
        self.report.workers = max(self.report.workers, int(compute.max_size or compute.min_size or 1))
        inputs_of = {unit["part"]: unit["inputs"] for unit in units}
        dataset = ray.data.from_items(units, override_num_blocks=min(len(units), 10_000))
        with _bounded_retries() as retries:
            parts = dataset.map_batches(
                _PartWriter,
                fn_constructor_kwargs=self.kwargs,
                batch_size=1,
                batch_format="pyarrow",
                compute=compute,
                num_cpus=self.num_cpus,
                num_gpus=self.num_gpus or None,
                **retries,
            )
        parts.context.max_errored_blocks = -1  # a part given up on: the others go on
        try:
            returned = {self._returned(entry, inputs_of) for entry in parts.iter_rows()}
        finally:
            for handle in ray.get(self.registry.take.remote()):
                ray.kill(handle, no_restart=True)
        return [unit for unit in units if unit["part"] not in returned]

    def _returned(self, entry: dict[str, Any], inputs_of: dict[str, Any]) -> str:
        entry = dict(entry)
        problem = entry.pop("failure", None)
        if problem:  # the storage (after the writer's own tries) or a bug: no use going on
            raise PartError(f"{entry['part']} of {self.base} failed in its worker: {problem}")
        entry["inputs"] = [os.fsdecode(name) for name in inputs_of[entry["part"]]]
        self.commit(entry)
        return str(entry["part"])

    def commit(self, entry: dict[str, Any]) -> None:
        """Record a written part in the manifest and the report."""
        entry["keys"] = [_input_key(source) for source in entry["inputs"]]
        if isinstance(entry["summaries"], str):
            entry["summaries"] = json.loads(entry["summaries"])
        _commit(self.fs, self.base, entry)
        self.committed.add(entry["part"])
        self.report.parts += 1
        self.report.rows += entry["rows"]
        self.report.errors += entry["errors"]

    def commit_failure(self, unit: dict[str, Any], top_k: int | None) -> None:
        """Write and commit the error row of an input that failed every try alone."""
        source = os.fsdecode(unit["inputs"][0])
        error = InputError(
            source,
            f"the Ray worker analysing it died on all {PART_TRIES} tries "
            "(a crash or out of memory; Ray's logs say more; --resume tries it again)",
            "worker_failed",
        )
        if unit["video"]:
            rows, summary = _failed_video(source, error, top_k)
            summaries = [summary]
        else:
            rows = [_kind(row, "image") for row in result_rows(ImageResult(source=source).fail(error), top_k)]
            summaries = []
        _write_part(self.fs, self.base, unit["part"], rows, self.kwargs["fmt"])
        entry = {"part": unit["part"], "rows": len(rows), "errors": len(rows), "summaries": summaries}
        self.commit(entry | {"seconds": 0.0, "worker": "driver", "inputs": [source], "worker_failed": True})


#: The options a run's rows depend on, in its manifest folder: a resume must use the same.
_SETTINGS = "_settings.json"
#: The run writing a local folder now (host, pid, start), in its manifest folder.
_LOCK = "_lock.json"


@contextlib.contextmanager
def _folder_lock(fs: Any, base: str, output: str) -> Iterator[None]:
    """Hold a local output folder for this run: a second run into it (a --resume started twice)
    is refused, since a run's first step deletes the part files no manifest entry commits, which
    include the other run's parts under way. A lock left by a run that died on this host is
    taken over. Object stores have no atomic "create if absent": their folders are not locked."""
    path = _lock_path(fs, base)
    if path is None:
        yield
        return
    pid, host = os.getpid(), socket.gethostname()
    mine = {"host": host, "pid": pid, "pid_start": _process_start(pid), "started": time.time()}
    for _ in range(2):
        try:
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            seen = _lock_holder(path)
            _refuse_if_held(output, path, seen)
            with contextlib.suppress(FileNotFoundError):  # a dead run's lock, if still the same one
                if _lock_holder(path) == seen:
                    os.unlink(path)
            continue
        except OSError as exc:
            raise StorageError(f"{output}: the output folder cannot be written ({exc})") from exc
        try:
            with os.fdopen(handle, "w") as stream:
                stream.write(json.dumps(mine) + "\n")
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise StorageError(f"{output}: the output folder cannot be written ({exc})") from exc
        break
    else:
        raise OptionError(f"{output}: another run took the folder at the same moment", option="output")
    try:
        yield
    finally:
        if _lock_holder(path) == mine:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def _lock_path(fs: Any, base: str) -> str | None:
    """Where a local output folder's lock lives (None: an object store, which is not locked)."""
    import pyarrow.fs as pafs

    return os.path.join(base, _MANIFEST, _LOCK) if isinstance(fs, pafs.LocalFileSystem) else None


def _refuse_if_held(output: str, path: str, holder: dict[str, Any] | None) -> None:
    """Raise the `OptionError` of a folder a live run holds (`holder`: what its lock file says,
    read from `path`); a dead run's lock on this host, or none, passes."""
    if holder is None:
        if _age_s(path) >= 5:  # no lock, or one a crash left empty
            return
        holder = {"pid": "?", "host": "?", "started": time.time()}  # being written by a run starting now
    here = holder.get("host") == socket.gethostname()
    if here and not _alive(holder.get("pid"), holder.get("pid_start")):  # a dead run's: taken over
        return
    since = time.strftime("%Y-%m-%d %H:%M", time.localtime(float(holder.get("started") or 0)))
    raise OptionError(
        f"{output} is being written by another run (pid {holder.get('pid')} on {holder.get('host')}, "
        f"since {since}): wait for it to end, or delete {path} if that run is no longer going",
        option="output",
    )


def _lock_holder(path: str) -> dict[str, Any] | None:
    """The run a lock file names (None: none, or a file cut short by a crash)."""
    try:
        with open(path) as stream:
            holder = json.loads(stream.read())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _age_s(path: str) -> float:
    try:
        return time.time() - os.stat(path).st_mtime
    except OSError:
        return float("inf")


def _process_start(pid: int) -> str | None:
    """When process `pid` started, in clock ticks since boot (Linux; None elsewhere): a pid
    reused by another process (a restarted container's driver is pid 1 again) is not the same run."""
    try:
        with open(f"/proc/{pid}/stat") as stream:
            return stream.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: object, started: object = None) -> bool:
    """Whether the process `pid` of this host (started at `started`, `_process_start`, when
    known) still runs; one of another user's counts."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return started is None or _process_start(pid) in (None, started)


#: Options that change no row (how fast, where, how much at once): a resume may change them.
_FREE_OPTIONS = frozenset(
    {
        "batch_size",
        "threads",
        "device",
        "max_pixels",
        "backend",
        "batch_frames",
        "queue_frames",
        "prefetch",
        "decode_threads",
    }
)


def _settings(
    model: str, top_k: int | None, faces: Any, video: Any, recognizer: dict[str, Any]
) -> dict[str, Any]:
    """What a run's rows depend on, as JSON values (a resume compares them)."""
    import dataclasses

    def fields(options: Any) -> dict[str, Any] | None:
        if options is None:
            return None
        values = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}  # no deep copy
        return {k: v for k, v in values.items() if k not in _FREE_OPTIONS}

    # an option not given is the recognizer's default: a run of the library (no precision) and
    # its resume by the command (precision fp32) have the same settings
    from emovit.predictor import EmotionRecognizer

    defaults = {
        name: param.default
        for name, param in inspect.signature(EmotionRecognizer.__init__).parameters.items()
        if param.kind is param.KEYWORD_ONLY and name != "faces"
    }
    given = {k: v for k, v in recognizer.items() if v is not None}
    chosen = {k: v for k, v in (defaults | given).items() if k not in _FREE_OPTIONS}
    from emovit.faces import FaceOptions
    from emovit.video import VideoOptions

    faces, video = faces or FaceOptions(), video or VideoOptions()  # what None means
    settings = {"model": model, "top_k": top_k, "faces": fields(faces), "video": fields(video), **chosen}

    def named(value: Any) -> str:  # a detector object: its name (its repr names its address)
        return str(getattr(value, "name", None) or type(value).__qualname__)

    return json.loads(json.dumps(settings, default=named))


def _check_settings(
    fs: Any,
    base: str,
    output: str,
    settings: dict[str, Any],
    entries: list[dict[str, Any]],
    *,
    record: bool = True,
) -> None:
    """Record the run's settings (unless not `record`), or (a folder with results) refuse other
    ones: rows of two setups would mix."""
    path = f"{base}/{_MANIFEST}/{_SETTINGS}"
    saved = None
    if entries:  # a folder without results (a run stopped before its first part) starts afresh
        # a run from before settings were kept has none
        with contextlib.suppress(FileNotFoundError), fs.open_input_stream(path) as handle:
            saved = json.loads(handle.read().decode())
    if saved is None:
        if record:
            _write_json(fs, path, settings, "the run's settings")
        return
    changed = _changed(_with_defaults(saved), settings)
    if changed:
        raise OptionError(
            f"{output} holds results made with other options ({'; '.join(changed)}): resume it with "
            "the same ones, or write into another folder",
            option="output",
        )


def _with_defaults(saved: dict[str, Any]) -> dict[str, Any]:
    """The settings of a run recorded before the defaults were (or before an option existed):
    an option it left out, and faces or video options it recorded as null, are the defaults."""
    defaults = _settings("", None, None, None, {})
    out = dict(saved)
    for key, value in defaults.items():
        if key in ("model", "top_k"):  # always recorded; a null top_k means all labels
            continue
        if out.get(key) is None:
            out[key] = value
        elif isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = value | out[key]  # a field added since
    return out


def _changed(saved: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    """What differs between two settings, field by field ("faces.margin: 0.1, now 0.3")."""
    out = []
    for key in sorted(set(saved) | set(now)):
        old, new = saved.get(key), now.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            out += _changed(old, new, f"{prefix}{key}.")
        elif old != new:
            out.append(f"{prefix}{key}: {json.dumps(old)}, now {json.dumps(new)}")
    return out


def check_output_folder(
    output: str,
    fmt: RowFormat = "parquet",
    *,
    resume: bool = False,
    model: str | None = None,
    top_k: int | None = None,
    faces: FaceOptions | None = None,
    video: VideoOptions | None = None,
    **recognizer: Any,
) -> None:
    """Raise the `OptionError` `predict_to_folder` would raise for `output` (a file, someone
    else's files, results without `resume`, another format, and, given the `model` and the
    options, a resume with options other than the folder's results were made with), writing
    nothing: a command checks it before it starts a cluster."""
    if fmt not in _EXTENSIONS:
        raise OptionError(f"format must be parquet or jsonl, got {fmt!r}", option="fmt")
    output = output if is_url(output) else os.path.abspath(output)
    fs, base, entries = _checked_output(output, fmt, resume)
    lock = _lock_path(fs, base)
    if lock is not None:  # held by a run going on (`_folder_lock`)
        _refuse_if_held(output, lock, _lock_holder(lock))
    if model is not None:
        model, faces = _absolute(model, faces)
        settings = _settings(model, top_k, faces, video, recognizer)
        _check_settings(fs, base, output, settings, entries, record=False)


def _absolute(model: str, faces: FaceOptions | None) -> tuple[str, FaceOptions | None]:
    """A local model folder and detector file by absolute path: the workers of a cluster do not
    share the driver's working folder (and a run's settings name them so)."""
    if not is_url(model) and os.path.exists(model):
        model = os.path.abspath(model)
    if faces is not None and faces.detector_model is not None:
        faces = faces.replace(detector_model=os.path.abspath(faces.detector_model))
    return model, faces


def _checked_output(output: str, fmt: str, resume: bool) -> tuple[Any, str, list[dict[str, Any]]]:
    """`output`'s filesystem, path and manifest entries, once it is found fit for a run."""
    import pyarrow.fs as pafs

    fs, base = _filesystem(output)
    info = fs.get_file_info(base)
    if info.type == pafs.FileType.File:
        raise OptionError(f"{output} is a file; the ray engine writes into a folder", option="output")
    entries = _manifest(fs, base)
    foreign = [] if entries else _foreign(fs, base)
    if foreign:  # a new run never mixes its parts (and its sweep) with someone else's files
        raise OptionError(
            f"{output} holds files emovit did not write ({', '.join(foreign[:3])}"
            f"{', ...' if len(foreign) > 3 else ''}): the ray engine writes into an empty folder "
            "(or one of its own runs, with --resume)",
            option="output",
        )
    if entries and not resume:
        raise OptionError(
            f"{output} already holds results ({len(entries)} parts): --resume to go on, or an empty folder",
            option="output",
        )
    kept = [entry for entry in entries if not (resume and entry.get("worker_failed"))]
    other = {entry["part"] for entry in kept if not entry["part"].endswith(_EXTENSIONS[fmt])}
    if other:
        raise OptionError(f"{output} holds {sorted(other)[0]}: resume it with the same format", option="fmt")
    return fs, base, entries


def predict_to_folder(
    inputs: Sequence[str],
    output: str,
    model: str = "default",
    *,
    fmt: RowFormat = "parquet",
    resume: bool = False,
    faces: FaceOptions | None = None,
    video: VideoOptions | None = None,
    workers: int | None = None,
    num_cpus: float = 1,
    num_gpus: float = 0,
    batch_size: int = 16,
    part_size: int = PART_SIZE,
    top_k: int | None = None,
    expand: bool = True,
    max_bytes: int | None = MAX_READ_BYTES,
    **recognizer: Any,
) -> JobReport:
    """Analyse `inputs` (paths and URLs, photos and videos) on Ray into the folder `output`
    (a path, or an ``s3://`` / ``gs://`` URL): files of rows (`result_schema`; JSONL rows as
    the local ``--format jsonl``), every input's rows exactly once, even when Ray retries a part.

    Args:
        inputs: what to analyse: files, folders, globs and URLs, as ``emovit predict`` takes them
            (folders of ``s3://``, ``gs://``, ``file://`` URLs are listed too); a repeated input is
            analysed once.
        output: the folder; it must be empty (or missing) unless `resume`.
        fmt: ``parquet`` (default) or ``jsonl``.
        resume: skip the inputs whose rows the folder already holds (a stopped run goes on).
        workers: actors (default: one per `num_cpus` CPUs, or `num_gpus` GPUs, of the cluster).
        part_size: photos per output file (a video is always a file of its own).
        expand: False when `inputs` are already single files and URLs (no folder or glob).
        batch_size, top_k, faces, video, recognizer: as `predict_dataset`.

    Examples:
        >>> report = predict_to_folder(["a.jpg", "s3://b/clips/a.mp4"], "s3://b/out/")  # doctest: +SKIP
        >>> report.line()  # doctest: +SKIP
        'ray: 1,200 rows (3 errors) from 1,001 inputs in 12.0 s: 100.0 rows/s on 8 workers'
    """

    if fmt not in _EXTENSIONS:
        raise OptionError(f"format must be parquet or jsonl, got {fmt!r}", option="fmt")
    if part_size < 1:
        raise OptionError(f"part_size must be at least 1, got {part_size}", option="part_size")
    start = time.perf_counter()
    # the workers of a cluster do not share the driver's working folder: local names are made
    # absolute here (the manifest keys inputs by absolute path already)
    output = output if is_url(output) else os.path.abspath(output)
    model, faces = _absolute(model, faces)
    fs, base, entries = _checked_output(output, fmt, resume)
    try:
        fs.create_dir(f"{base}/{_MANIFEST}", recursive=True)
    except OSError as exc:  # a read-only folder, a bucket without credentials
        raise StorageError(f"{output}: the output folder cannot be written ({exc})") from exc
    with _folder_lock(fs, base, output):  # one run at a time writes a folder
        fs, base, entries = _checked_output(output, fmt, resume)  # as the last run left it
        _check_settings(fs, base, output, _settings(model, top_k, faces, video, recognizer), entries)
        if resume:  # inputs that killed their worker (perhaps a lost node, another job's memory): again
            for entry in [entry for entry in entries if entry.get("worker_failed")]:
                # its file: swept
                fs.delete_file(f"{base}/{_MANIFEST}/{entry['part'].rsplit('.', 1)[0]}.json")
                entries.remove(entry)
        committed = {entry["part"] for entry in entries}
        _sweep(fs, base, committed)
        done = {key for entry in entries for key in _entry_keys(entry)}
        if expand:
            from emovit.sources import expand_sources

            inputs = expand_remote(expand_sources(inputs))
        first: dict[str, str] = {}  # key -> the input (its absolute path): one per input, however written
        for source in inputs:
            first.setdefault(_input_key(source), _input_key(source))
        unique = list(first.values())
        todo = [source for key, source in first.items() if key not in done]
        report = JobReport(inputs=len(unique), skipped=len(unique) - len(todo), output=output)
        report.duplicates = len(inputs) - len(unique)
        report.earlier_errors = sum(  # the parts made only of this run's inputs (a part's count is whole)
            entry.get("errors", 0) for entry in entries if all(key in first for key in _entry_keys(entry))
        )
        units = _units(todo, part_size, fmt)
        if units:
            kwargs: dict[str, Any] = {"model": model, "faces": faces, "video": video, "top_k": top_k}
            kwargs |= {"num_cpus": num_cpus, "max_bytes": max_bytes}
            kwargs |= {"output": output, "fmt": fmt, "recognizer": {"batch_size": batch_size, **recognizer}}
            run = _PartRun(fs, base, kwargs, workers, num_cpus, num_gpus, committed, report)
            try:
                failed = run(units)
                # a part whose every try failed (its actor died: a crash or out of memory): each of its
                # inputs is tried alone, and only the inputs that fail alone too become error rows
                alone = [
                    single for unit in failed if len(unit["inputs"]) > 1 for single in _singles(unit, fmt)
                ]
                lost = [unit for unit in failed if len(unit["inputs"]) == 1] + (run(alone) if alone else [])
            finally:
                run.close()
            for unit in lost:
                run.commit_failure(unit, top_k)
            report.failed_inputs = [os.fsdecode(unit["inputs"][0]) for unit in lost]
            _sweep(fs, base, committed)  # files of attempts Ray gave up on
        report.seconds = time.perf_counter() - start
        by_key: dict[str, dict[str, Any]] = {}
        for entry in _manifest(fs, base):
            key_of = dict(zip(entry["inputs"], _entry_keys(entry), strict=False))
            for summary in entry.get("summaries") or []:
                by_key[key_of.get(summary["source"]) or _input_key(summary["source"])] = summary
        report.summaries = [by_key[key] for key in first if key in by_key]
        return report


def read_results(output: str) -> Iterator[dict[str, Any]]:
    """The rows of an output folder, as the local ``--format jsonl`` writes them (Parquet maps
    back to dicts), committed parts only, part by part.

    Examples:
        >>> sum(not row["ok"] for row in read_results("results/"))  # doctest: +SKIP
        3
    """
    fs, base = _filesystem(output)
    for entry in sorted(_manifest(fs, base), key=lambda e: e["part"]):
        path = f"{base}/{entry['part']}"
        if entry["part"].endswith(".parquet"):
            import pyarrow.parquet as pq

            with fs.open_input_file(path) as handle:
                for row in pq.read_table(handle).to_pylist():
                    yield _from_arrow(row)
        else:
            with fs.open_input_stream(path) as handle:
                for line in handle.read().decode().splitlines():
                    if line:
                        yield json.loads(line)
