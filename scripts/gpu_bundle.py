"""Pack an ImageFolder tree of JPEG faces (FER2013) and a FER+ vote file into a small bundle, and
unpack it again, byte for byte: for a training machine the data cannot be copied to whole.

FER2013's 48x48 JPEGs share one header (quantisation and Huffman tables, 318 bytes) and a file
is mostly that header; the bundle keeps each distinct header once and each file's remaining bytes
(its scan), so the split folders' 57 MiB become about 47 MiB, and unpacking writes the original
files again (the same bytes, so training decodes the same pixels as on the machine that packed).

    python scripts/gpu_bundle.py pack ../shared/data/fer2013 -o .devdata \\
        --labels ../shared/data/ferplus/labels.csv --split train --split validation
    python scripts/gpu_bundle.py unpack .devdata -o /tmp/fer2013   # + /tmp/fer2013/labels.csv
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import sys
from pathlib import Path

SOS = b"\xff\xda"  # start of scan: the bytes before it are the header


def pack(data: Path, out: Path, splits: list[str], labels: Path | None, per_class: int | None) -> None:
    files = []
    for split in splits:
        folder = data / split
        if not folder.is_dir():
            sys.exit(f"{folder}: no such split folder")
        for cls in sorted(p for p in folder.iterdir() if p.is_dir()):
            names = sorted(cls.glob("*.jpg"))
            files += names[:per_class] if per_class else names
    headers: dict[bytes, int] = {}
    index = []
    out.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open(out / "scans.bin", "wb") as scans:
        for path in files:
            raw = path.read_bytes()
            cut = raw.find(SOS)
            if cut < 0:
                sys.exit(f"{path}: not a baseline JPEG (no start-of-scan marker)")
            head = headers.setdefault(raw[:cut], len(headers))
            scans.write(raw[cut:])
            digest.update(raw)
            index.append([str(path.relative_to(data)), head, len(raw) - cut])
    (out / "headers.bin").write_bytes(b"".join(headers))
    meta = {
        "files": index,
        "header_lengths": [len(h) for h in headers],
        "sha256": digest.hexdigest(),
        "labels": labels is not None,
    }
    (out / "index.json.xz").write_bytes(lzma.compress(json.dumps(meta).encode()))
    if labels is not None:
        keep = {tuple(f[0].split("/", 1)) for f in index}
        lines = labels.read_text().splitlines()
        rows = [lines[0]] + [ln for ln in lines[1:] if tuple(ln.split(",", 2)[:2]) in keep]
        (out / "labels.csv.xz").write_bytes(lzma.compress(("\n".join(rows) + "\n").encode()))
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"{len(index)} files, {len(headers)} distinct header(s), {size / 2**20:.1f} MiB in {out}")


def unpack(bundle: Path, out: Path) -> None:
    meta = json.loads(lzma.decompress((bundle / "index.json.xz").read_bytes()))
    blob = (bundle / "headers.bin").read_bytes()
    headers, at = [], 0
    for n in meta["header_lengths"]:
        headers.append(blob[at : at + n])
        at += n
    digest = hashlib.sha256()
    made: set[Path] = set()
    with open(bundle / "scans.bin", "rb") as scans:
        for rel, head, length in meta["files"]:
            raw = headers[head] + scans.read(length)
            digest.update(raw)
            target = out / rel
            if target.parent not in made:
                target.parent.mkdir(parents=True, exist_ok=True)
                made.add(target.parent)
            target.write_bytes(raw)
    if digest.hexdigest() != meta["sha256"]:
        sys.exit(f"{bundle}: the unpacked files differ from the packed ones (damaged bundle)")
    if meta.get("labels"):
        (out / "labels.csv").write_bytes(lzma.decompress((bundle / "labels.csv.xz").read_bytes()))
    print(f"{len(meta['files'])} files written under {out}, checksum matches")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack")
    p.add_argument("data", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--split", action="append", dest="splits")
    p.add_argument("--labels", type=Path)
    p.add_argument("--per-class", type=int, help="at most this many files per class (a test bundle)")
    u = sub.add_parser("unpack")
    u.add_argument("bundle", type=Path)
    u.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "pack":
        pack(args.data, args.output, args.splits or ["train", "validation"], args.labels, args.per_class)
    else:
        unpack(args.bundle, args.output)


if __name__ == "__main__":
    main()
