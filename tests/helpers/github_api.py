"""A stand-in for GitHub's REST API on loopback (stdlib http.server) that records every request: commit
statuses, issue comments kept as GitHub keeps them (list in pages with a ``Link`` header, post, edit, a
404 for an edit of a deleted comment), and the head commit of the pull requests a test says were pushed."""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

COMMENTS = re.compile(r"/repos/([^/]+/[^/]+)/issues/(\d+)/comments")
COMMENT = re.compile(r"/repos/([^/]+/[^/]+)/issues/comments/(\d+)")
PULL = re.compile(r"/repos/([^/]+/[^/]+)/pulls/(\d+)")


@dataclass
class Recorded:
    method: str
    path: str  # with the query
    headers: dict[str, str]
    body: Any  # the JSON sent, None for a GET


@dataclass
class FakeGitHub:
    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    comments: dict[int, dict[str, Any]] = field(default_factory=dict)  # id -> {"pr", "body"}
    answers: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)  # path -> forced answer
    heads: dict[int, str] = field(default_factory=dict)  # pull request -> its head commit
    next_id: int = 1000

    def add_comment(self, pr: int, body: str) -> int:
        """A comment made by someone else (or an earlier run): its id."""
        self.next_id += 1
        self.comments[self.next_id] = {"pr": pr, "body": body}
        return self.next_id

    def calls(self, *methods: str) -> list[tuple[str, str]]:
        """(method, path without query) of the requests, only those of ``methods`` when given."""
        return [(r.method, r.path.split("?")[0]) for r in self.requests if not methods or r.method in methods]

    def pr_comments(self, pr: int) -> list[str]:
        return [c["body"] for _, c in sorted(self.comments.items()) if c["pr"] == pr]

    def answer(self, method: str, raw_path: str, body: Any, host: str) -> tuple[int, Any, dict[str, str]]:
        path = urlsplit(raw_path).path
        if path in self.answers:
            status, answer = self.answers[path]
            return status, answer, {}
        listed, one, pull = COMMENTS.fullmatch(path), COMMENT.fullmatch(path), PULL.fullmatch(path)
        if method == "GET" and pull and int(pull.group(2)) in self.heads:
            number = int(pull.group(2))
            return 200, {"number": number, "head": {"sha": self.heads[number]}}, {}
        if method == "GET" and listed:
            return self._page(int(listed.group(2)), path, parse_qs(urlsplit(raw_path).query), host)
        if method == "POST" and listed:
            self.next_id += 1
            self.comments[self.next_id] = {"pr": int(listed.group(2)), "body": body["body"]}
            return 201, {"id": self.next_id, "body": body["body"]}, {}
        if method == "PATCH" and one:
            comment = self.comments.get(int(one.group(2)))
            if comment is None:
                return 404, {"message": "Not Found"}, {}
            comment["body"] = body["body"]
            return 200, {"id": int(one.group(2)), "body": body["body"]}, {}
        if method == "POST" and "/statuses/" in path:
            return 201, {"id": 1}, {}
        return 404, {"message": "Not Found"}, {}

    def _page(
        self, pr: int, path: str, query: dict[str, list[str]], host: str
    ) -> tuple[int, Any, dict[str, str]]:
        per_page = int(query.get("per_page", ["30"])[0])
        page = int(query.get("page", ["1"])[0])
        items = [{"id": i, "body": c["body"]} for i, c in sorted(self.comments.items()) if c["pr"] == pr]
        shown = items[(page - 1) * per_page : page * per_page]
        headers = {}
        if page * per_page < len(items):
            headers["Link"] = f'<http://{host}{path}?per_page={per_page}&page={page + 1}>; rel="next"'
        return 200, shown, headers


@contextlib.contextmanager
def fake_github() -> Iterator[FakeGitHub]:
    github = FakeGitHub()

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            github.requests.append(Recorded(self.command, self.path, dict(self.headers), body))
            status, answer, headers = github.answer(self.command, self.path, body, self.headers["Host"])
            data = json.dumps(answer).encode()
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = _handle

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    github.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield github
    finally:
        server.shutdown()
        server.server_close()
