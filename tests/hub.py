"""Helpers that stand in for the Hugging Face Hub offline: a pre-populated cache."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def populate_hf_cache(cache: Path, repo_id: str, folder: Path, revision: str = "main") -> Path:
    """Lay `folder`'s files out as huggingface_hub's cache does (blobs, a snapshot of
    symlinks, refs/<revision>) and return the snapshot folder."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for file in sorted(folder.iterdir()):
        blob = repo / "blobs" / hashlib.sha256(str(file).encode()).hexdigest()
        if not blob.exists():
            os.symlink(file.resolve(), blob)
        link = snapshot / file.name
        if not link.exists():
            os.symlink(os.path.relpath(blob, snapshot), link)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return snapshot


class FakeHub:
    """A minimal Hugging Face Hub on 127.0.0.1 serving model folders, so the real download
    code of huggingface_hub runs in tests without the internet.

    It answers the calls `snapshot_download` makes: the revision info, the file tree, and
    HEAD/GET of each file under ``/{repo}/resolve/{commit}/{path}``; unknown repos get the
    Hub's 404 with ``X-Error-Code: RepoNotFound``.
    """

    def __init__(self, repos: dict[str, Path]) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import unquote, urlparse

        self.requests: list[str] = []
        hub = self

        def files(repo: str) -> dict[str, Path]:
            return {p.name: p for p in sorted(repos[repo].iterdir()) if p.is_file()}

        def commit_of(repo: str) -> str:
            return hashlib.sha1(repo.encode()).hexdigest()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _json(self, payload: object) -> None:
                self._send(200, json.dumps(payload).encode(), {"Content-Type": "application/json"})

            def _route(self) -> None:
                path = unquote(urlparse(self.path).path)
                hub.requests.append(f"{self.command} {path}")
                parts = path.strip("/").split("/")
                if parts[:2] == ["api", "models"]:
                    repo = "/".join(parts[2:4])
                    if repo not in repos:
                        return self._send(404, b"{}", {"X-Error-Code": "RepoNotFound"})
                    if parts[4:5] == ["revision"]:
                        siblings = [{"rfilename": name} for name in files(repo)]
                        return self._json({"id": repo, "sha": commit_of(repo), "siblings": siblings})
                    if parts[4:5] == ["tree"]:
                        return self._json(
                            [
                                {
                                    "type": "file",
                                    "path": name,
                                    "size": p.stat().st_size,
                                    "oid": hashlib.sha1(p.read_bytes()).hexdigest(),
                                }
                                for name, p in files(repo).items()
                            ]
                        )
                    return self._send(404)
                repo, rest = "/".join(parts[:2]), parts[2:]
                if repo not in repos:
                    return self._send(404, b"{}", {"X-Error-Code": "RepoNotFound"})
                if len(rest) >= 3 and rest[0] == "resolve" and rest[2] in files(repo):
                    data = files(repo)[rest[2]].read_bytes()
                    etag = f'"{hashlib.sha256(data).hexdigest()}"'
                    headers = {"X-Repo-Commit": commit_of(repo), "ETag": etag}
                    self.send_response(200)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command == "GET":
                        self.wfile.write(data)
                    return None
                return self._send(404, b"{}", {"X-Error-Code": "EntryNotFound"})

            do_GET = _route
            do_HEAD = _route

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
