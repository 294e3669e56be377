import os
import socket

from http.server import BaseHTTPRequestHandler, HTTPServer

REDIS = (os.environ.get("REDIS_HOST", "redis"), 6379)


def incr():
    with socket.create_connection(REDIS) as s:
        s.sendall(b"*2\r\n$4\r\nINCR\r\n$4\r\nhits\r\n")
        return s.recv(64).decode().strip(":\r\n")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"hits: {incr()}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


HTTPServer(("0.0.0.0", 5000), Handler).serve_forever()
