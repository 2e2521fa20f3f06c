#!/usr/bin/env python3
"""A small HTTP file server for vmfest's setup_model tests, with misbehaviours on request.

Usage: http_server.py --root DIR --log FILE [--port N]
Prints "PORT <n>" on stdout once it listens on 127.0.0.1 (port 0: a free one is picked).

A URL is /<flags>/<file under DIR>, flags being a comma-separated list ("-" for none):
  ranges         honour Range and If-Range (206 / 416), send Accept-Ranges, ETag, Last-Modified;
                 without it the server ignores Range and always sends the whole file, like
                 python's own http.server
  drop-once=N    the first GET of this URL announces the full length, sends N bytes and hangs up
  drop=N         every GET sends at most N bytes of what it announced, then hangs up
  truncate=N     serve the file's first N bytes as if they were the whole file
  rate=B         send about B bytes per second
  stall=N        send N bytes, then nothing more (the connection stays open)
  chunked        no Content-Length (chunked transfer encoding)
A missing file is a 404. Every request is appended to the log as one JSON line (method, path,
range, if_range) before it is answered, so a test can count downloads.
"""
import argparse
import email.utils
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNK = 256 * 1024


class State:
    def __init__(self, root, log):
        self.root = os.path.realpath(root)
        self.log = open(log, "a", buffering=1)
        self.lock = threading.Lock()
        self.seen = set()  # URLs already dropped once

    def record(self, entry):
        with self.lock:
            self.log.write(json.dumps(entry) + "\n")
            self.log.flush()

    def first_time(self, url):
        with self.lock:
            if url in self.seen:
                return False
            self.seen.add(url)
            return True


def parse_flags(text):
    flags = {}
    for item in text.split(","):
        if item in ("", "-"):
            continue
        name, _, value = item.partition("=")
        flags[name] = int(value) if value else True
    return flags


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state = None  # set in main

    def log_message(self, format, *args):  # the JSON log is enough
        pass

    def do_GET(self):
        self.state.record({"method": "GET", "path": self.path,
                           "range": self.headers.get("Range"),
                           "if_range": self.headers.get("If-Range")})
        parts = self.path.split("?")[0].lstrip("/").split("/", 1)
        if len(parts) != 2:
            return self.fail(404)
        flags = parse_flags(parts[0])
        path = os.path.realpath(os.path.join(self.state.root, parts[1]))
        if not path.startswith(self.state.root + os.sep) or not os.path.isfile(path):
            return self.fail(404)
        info = os.stat(path)
        size = min(info.st_size, flags.get("truncate", info.st_size))
        etag = '"%x-%x"' % (info.st_mtime_ns, info.st_size)
        modified = email.utils.formatdate(info.st_mtime, usegmt=True)
        start, status = 0, 200
        wanted = self.headers.get("Range")
        if "ranges" in flags and wanted and wanted.startswith("bytes="):
            if_range = self.headers.get("If-Range")
            if if_range is None or if_range in (etag, modified):
                first = wanted[len("bytes="):].split("-")[0]
                start = int(first) if first else 0
                if start >= size:
                    self.send_response(416)
                    self.send_header("Content-Range", "bytes */%d" % size)
                    self.send_header("Content-Length", "0")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    return
                status = 206
        length = size - start
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        if "ranges" in flags:
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", modified)
        if status == 206:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, size - 1, size))
        if "chunked" in flags:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length))
        self.send_header("Connection", "close")
        self.end_headers()

        limit = length
        if "drop-once" in flags and self.state.first_time(self.path):
            limit = min(limit, flags["drop-once"])
        if "drop" in flags:
            limit = min(limit, flags["drop"])
        if "stall" in flags:
            limit = min(limit, flags["stall"])
        with open(path, "rb") as source:
            self.send_body(source, start, limit, flags)
        if "stall" in flags:
            time.sleep(120)  # the client gives up first; the test kills us at the end
        self.close_connection = True

    def send_body(self, source, start, limit, flags):
        chunked = "chunked" in flags
        rate = flags.get("rate")
        if not chunked and not rate:
            sent = 0
            while sent < limit:  # the fast path: the kernel copies the file
                count = self.connection.sendfile(source, start + sent, limit - sent)
                if count == 0:
                    break
                sent += count
            return
        source.seek(start)
        began, sent = time.monotonic(), 0
        while sent < limit:
            data = source.read(min(CHUNK if not rate else max(1, rate // 20), limit - sent))
            if not data:
                break
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
            sent += len(data)
            if rate:
                ahead = sent / rate - (time.monotonic() - began)
                if ahead > 0:
                    time.sleep(ahead)
        if chunked and sent == limit:
            self.wfile.write(b"0\r\n\r\n")

    def fail(self, status):
        body = b"not here\n"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):  # clients that hang up are normal
            super().handle_error(request, client_address)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    Handler.state = State(args.root, args.log)
    server = Server(("127.0.0.1", args.port), Handler)
    print("PORT %d" % server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
