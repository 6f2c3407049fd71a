"""A small Hugging Face Hub-compatible HTTP server for tests (stdlib ``http.server`` in a thread).

It implements what ``huggingface_hub`` 2.4 calls for ``snapshot_download`` and ``upload_folder`` (read from its
source: ``hf_api.model_info`` / ``list_repo_tree`` / ``create_repo`` / ``_validate_yaml``,
``_commit_api._fetch_upload_modes`` / ``_send_commit``, ``file_download.get_hf_file_metadata`` / ``http_get``):

- ``GET /api/models/{repo}`` and ``/api/models/{repo}/revision/{rev}``: the revision's commit ``sha``;
- ``GET /api/models/{repo}/tree/{rev}``: one page of ``{"type": "file", "path", "size", "oid"}``;
- ``HEAD``/``GET /{repo}/resolve/{rev}/{file}``: the file with ``X-Repo-Commit`` and ``ETag`` (its git blob sha;
  for an LFS file the pointer's, with the content's sha256 and size in ``X-Linked-Etag`` / ``X-Linked-Size``);
- ``POST /api/repos/create``, ``/api/validate-yaml``, ``/api/models/{repo}/preupload/{rev}``, the git LFS batch
  API ``/{repo}.git/info/lfs/objects/batch`` with its ``PUT`` upload URL, and the NDJSON
  ``/api/models/{repo}/commit/{rev}``.

Like the Hub's default ``.gitattributes``, ``*.safetensors`` files are LFS files and the rest regular git blobs. No
``X-Xet-*`` header is ever sent, so downloads never take the Xet path; tests also set ``HF_HUB_DISABLE_XET``, which
makes ``upload_folder`` take its plain ``create_commit`` + LFS path instead of the Xet pipeline. Errors carry the
``X-Error-Code`` / ``X-Error-Message`` headers and ``{"error": ...}`` body that
``huggingface_hub.utils.hf_raise_for_status`` maps to its exceptions.

Failure modes (``FakeHub.mode``): ``hang`` (accept connections, never answer), ``truncate`` (cut the connection
half-way through an LFS file; a resumed ``Range`` request gets its headers and no bytes, so the client's retries run
out instead of completing the file) and ``refuse_upload`` (the LFS upload URL answers 403).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# the Hub's own 404 texts (hf_raise_for_status shows the X-Error-Message / "error" field as the server's message)
REPO_NOT_FOUND = "Repository not found"
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_sha(data: bytes) -> str:
    """``git hash-object``: what the Hub returns as a regular file's ``oid`` and ``ETag``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(path: str) -> bool:
    return path.endswith(".safetensors")


def lfs_pointer(data: bytes) -> bytes:
    """The git LFS pointer file that git stores in place of an LFS file."""
    sha = hashlib.sha256(data).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(data)}\n".encode()


@dataclass
class Repo:
    """Commits as full file snapshots (sha -> {path: bytes}) and refs (branch/tag -> sha)."""

    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)

    def commit(self, files: dict[str, bytes], message: str, branch: str = "main") -> str:
        parent = self.refs.get(branch, "")
        sha = hashlib.sha1(f"{parent}\n{message}\n{len(self.commits)}".encode()).hexdigest()
        self.commits[sha] = dict(files)
        self.refs[branch] = sha
        return sha

    def resolve(self, revision: str) -> str | None:
        return self.refs.get(revision) or (revision if revision in self.commits else None)


class FakeHub:
    """The server's state and its thread: ``start()``, ``stop()``, ``url``; ``mode`` is ``ok``, ``hang`` or
    ``truncate``; ``requests`` logs ``(method, path)`` of every request."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}  # sha256 -> content, filled by LFS uploads
        self.mode = "ok"
        self.requests: list[tuple[str, str]] = []
        self.release = threading.Event()  # set on stop: frees handlers parked by the hang mode
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            state = hub

        self.release.clear()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        """Close the listening socket: later connections are refused."""
        self.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def add_folder(self, repo_id: str, folder: str | Path, message: str = "add model", tag: str | None = None) -> str:
        """Commit every file of ``folder`` (e.g. one written by save_pretrained) to ``main``; returns the sha."""
        repo = self.repos.setdefault(repo_id, Repo())
        files = dict(repo.commits.get(repo.refs.get("main"), {}))
        files.update({p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()})
        sha = repo.commit(files, message)
        if tag:
            repo.refs[tag] = sha
        return sha

    def commit_count(self, repo_id: str) -> int:
        return len(self.repos[repo_id].commits)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: FakeHub

    def log_message(self, format, *args) -> None:  # noqa: A002 - the stdlib's signature; keep test output quiet
        pass

    # -- plumbing

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, length=None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.send_header("Connection", "close")  # no pooled connection outlives stop()
        self.end_headers()
        self.close_connection = True
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj, status: int = 200) -> None:
        self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json"})

    def _error(self, status: int, code: str | None, message: str, headers: dict[str, str] | None = None) -> None:
        h = {"Content-Type": "application/json", "X-Error-Message": message, **(headers or {})}
        if code:
            h["X-Error-Code"] = code
        self._send(status, json.dumps({"error": message}).encode(), h)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []  # a streamed upload (httpx sends a file object chunked)
        while size := int(self.rfile.readline().split(b";")[0], 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        self.rfile.readline()
        return b"".join(chunks)

    def _route(self) -> None:
        hub = self.state
        hub.requests.append((self.command, self.path))
        if hub.mode == "hang":
            hub.release.wait()  # accepted, never answered
            self.close_connection = True
            return
        path = urllib.parse.urlsplit(self.path).path
        for pattern, method, handler in ROUTES:
            m = re.fullmatch(pattern, path)
            if m and self.command in method:
                return handler(self, *(urllib.parse.unquote(g) for g in m.groups()))
        self._error(404, None, f"no route for {self.command} {path}")

    do_GET = do_HEAD = do_POST = do_PUT = _route

    def _repo(self, repo_id: str) -> Repo | None:
        repo = self.state.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", REPO_NOT_FOUND)
        return repo

    def _commit_of(self, repo: Repo, revision: str) -> str | None:
        sha = repo.resolve(revision)
        if sha is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return sha

    # -- endpoints

    def model_info(self, repo_id: str, revision: str | None = None) -> None:
        repo = self._repo(repo_id)
        sha = repo and self._commit_of(repo, revision or "main")
        if sha:
            siblings = [{"rfilename": p} for p in sorted(repo.commits[sha])]
            self._json({"id": repo_id, "modelId": repo_id, "sha": sha, "private": False, "siblings": siblings})

    def tree(self, repo_id: str, revision: str) -> None:
        repo = self._repo(repo_id)
        sha = repo and self._commit_of(repo, revision)
        if sha:
            self._json([_tree_entry(p, b) for p, b in repo.commits[sha].items()])

    def resolve(self, repo_id: str, revision: str, filename: str) -> None:
        repo = self._repo(repo_id)
        sha = repo and self._commit_of(repo, revision)
        if not sha:
            return
        data = repo.commits[sha].get(filename)
        if data is None:
            self._error(404, "EntryNotFound", f"{filename} does not exist", {"X-Repo-Commit": sha})
            return
        headers = {"X-Repo-Commit": sha, "Accept-Ranges": "bytes"}
        if is_lfs(filename):
            headers["ETag"] = f'"{git_blob_sha(lfs_pointer(data))}"'
            headers["X-Linked-Etag"] = f'"{hashlib.sha256(data).hexdigest()}"'
            headers["X-Linked-Size"] = str(len(data))
        else:
            headers["ETag"] = f'"{git_blob_sha(data)}"'
        if self.command == "GET" and self.state.mode == "truncate" and is_lfs(filename):
            self._cut(data, headers)
            return
        self._send(200, data, headers)

    def _cut(self, data: bytes, headers: dict[str, str]) -> None:
        """Promise the whole file, send half of it (or, for a resumed Range request, nothing) and hang up."""
        start = int(re.match(r"bytes=(\d+)-", self.headers.get("Range", "bytes=0-")).group(1))
        status = 206 if start else 200
        if start:
            headers = {**headers, "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if not start:
            self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.close_connection = True

    def create_repo(self) -> None:
        payload = json.loads(self._body())
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        url = f"{self.state.url}/{repo_id}"
        if repo_id in self.state.repos:  # the Hub's 409 carries the url too: create_repo(exist_ok=True) reads it
            message = "You already created this model repo"
            self._send(409, json.dumps({"error": message, "url": url}).encode(), {"X-Error-Message": message})
            return
        self.state.repos[repo_id] = repo = Repo()
        repo.commit({".gitattributes": GITATTRIBUTES}, "initial commit")  # the Hub starts every repo like this
        self._json({"url": url, "name": repo_id})

    def validate_yaml(self) -> None:
        self._body()
        self._json({"errors": [], "warnings": []})

    def preupload(self, repo_id: str, revision: str) -> None:
        payload = json.loads(self._body())
        repo = self._repo(repo_id)
        sha = repo and self._commit_of(repo, revision)
        if sha:
            current = repo.commits[sha]
            files = [
                {
                    "path": f["path"],
                    "uploadMode": "lfs" if is_lfs(f["path"]) else "regular",
                    "shouldIgnore": False,
                    "oid": _oid(f["path"], current[f["path"]]) if f["path"] in current else None,
                }
                for f in payload["files"]
            ]
            self._json({"files": files, "commitOid": sha})

    def lfs_batch(self, repo_id: str) -> None:
        payload = json.loads(self._body())
        if self._repo(repo_id) is None:
            return
        objects = []
        for obj in payload["objects"]:
            if obj["oid"] not in self.state.lfs_objects:  # no "actions": the Hub already has it
                obj = {**obj, "actions": {"upload": {"href": f"{self.state.url}/lfs-objects/{obj['oid']}"}}}
            objects.append(obj)
        self._json({"transfer": "basic", "objects": objects})

    def lfs_upload(self, oid: str) -> None:
        data = self._body()
        if self.state.mode == "refuse_upload":
            self._error(403, None, "LFS storage refused the upload")
        elif hashlib.sha256(data).hexdigest() != oid:
            self._error(400, None, f"content does not hash to {oid}")
        else:
            self.state.lfs_objects[oid] = data
            self._send(200)

    def commit(self, repo_id: str, revision: str) -> None:
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        repo = self._repo(repo_id)
        sha = repo and self._commit_of(repo, revision)
        if not sha:
            return
        files = dict(repo.commits[sha])
        header = {}
        for item in lines:
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "lfsFile" and value["oid"] in self.state.lfs_objects:
                files[value["path"]] = self.state.lfs_objects[value["oid"]]
            elif key == "deletedFile":
                files.pop(value["path"], None)
            else:
                self._error(400, None, f"cannot apply {key} {value.get('path')!r} (unknown operation or LFS object)")
                return
        new = repo.commit(files, header.get("summary", ""), branch=revision)
        self._json({"commitUrl": f"{self.state.url}/{repo_id}/commit/{new}", "commitOid": new, "success": True})


def _oid(path: str, data: bytes) -> str:
    """What preupload answers as a file's ``oid``: the sha256 of an LFS file, the git blob sha of a regular one
    (huggingface_hub compares it with its own ``_local_oid`` to drop unchanged files from a commit)."""
    return hashlib.sha256(data).hexdigest() if is_lfs(path) else git_blob_sha(data)


def _tree_entry(path: str, data: bytes) -> dict:
    if not is_lfs(path):
        return {"type": "file", "path": path, "size": len(data), "oid": git_blob_sha(data)}
    pointer = lfs_pointer(data)
    lfs = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": len(pointer)}
    return {"type": "file", "path": path, "size": len(data), "oid": git_blob_sha(pointer), "lfs": lfs}


_REPO = r"([^/]+/[^/]+)"
ROUTES = [
    (rf"/api/models/{_REPO}", ("GET",), _Handler.model_info),
    (rf"/api/models/{_REPO}/revision/([^/]+)", ("GET",), _Handler.model_info),
    (rf"/api/models/{_REPO}/tree/([^/]+)(?:/.*)?", ("GET",), _Handler.tree),
    (rf"/{_REPO}/resolve/([^/]+)/(.+)", ("GET", "HEAD"), _Handler.resolve),
    (r"/api/repos/create", ("POST",), _Handler.create_repo),
    (r"/api/validate-yaml", ("POST",), _Handler.validate_yaml),
    (rf"/api/models/{_REPO}/preupload/([^/]+)", ("POST",), _Handler.preupload),
    (r"/([^/]+/[^/]+)\.git/info/lfs/objects/batch", ("POST",), _Handler.lfs_batch),
    (r"/lfs-objects/([0-9a-f]{64})", ("PUT",), _Handler.lfs_upload),
    (rf"/api/models/{_REPO}/commit/([^/]+)", ("POST",), _Handler.commit),
]
