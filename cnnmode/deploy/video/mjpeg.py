"""The annotated stream over HTTP as MJPEG (`multipart/x-mixed-replace`), so a headless machine with a camera can
be watched from a browser: GET / is a page showing it, GET /stream the stream itself."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

from cnnmode.errors import UsageError

BOUNDARY = "cnnmodeframe"
PAGE = (b"<!doctype html><html><head><meta charset='utf-8'><title>CNN Mode video</title></head>"
        b"<body style='margin:0;background:#111'><img src='/stream' style='max-width:100%'></body></html>")


class MjpegServer:
    """Serves the newest published frame to every connected client, on its own threads."""

    def __init__(self, port: int, host: str = "127.0.0.1", quality: int = 80) -> None:
        self.quality = quality
        self._jpeg: bytes | None = None
        self._count = 0
        self._new = threading.Condition()
        self._closed = False
        self.clients = 0
        try:
            self.httpd = ThreadingHTTPServer((host, port), self._handler())
        except OSError as e:
            raise UsageError(f"--http {port}: cannot listen on {host}:{port} ({e.strerror})") from None
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, name="cnnmode-mjpeg", daemon=True).start()

    def publish(self, image: np.ndarray) -> None:
        """Make `image` (BGR) the frame clients see next (encoded only while someone watches)."""
        if not self.clients:
            return
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if ok:
            with self._new:
                self._jpeg, self._count = buf.tobytes(), self._count + 1
                self._new.notify_all()

    def next_frame(self, seen: int) -> tuple[bytes | None, int]:
        """The first frame newer than `seen` (waiting for it), or None once the server is closing."""
        with self._new:
            while self._count == seen and not self._closed:
                self._new.wait(1.0)
            return (None if self._closed else self._jpeg), self._count

    def _watching(self, change: int) -> None:
        with self._new:  # handler threads come and go concurrently
            self.clients += change

    def close(self) -> None:
        with self._new:
            self._closed = True
            self._new.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet: the video's own console output matters
                pass

            def do_GET(self) -> None:
                if self.path == "/":
                    self._send(200, "text/html; charset=utf-8", PAGE)
                elif self.path == "/stream":
                    self._stream()
                else:
                    self._send(404, "application/json", b'{"error": "not found; try / or /stream"}')

            def _send(self, status: int, kind: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _stream(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                seen = 0
                server._watching(+1)
                try:
                    while True:
                        jpeg, seen = server.next_frame(seen)
                        if jpeg is None:
                            return
                        self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         f"{len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    return
                finally:
                    server._watching(-1)

        return Handler
