"""An HTTP server whose state lives only in memory: GET / answers the number of requests
served so far (this one included). Used to show an agent restart from an image keeps it."""
import http.server
import sys

COUNT = 0


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global COUNT
        COUNT += 1
        body = f"{COUNT}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
print(f"serving on {sys.argv[1]}", flush=True)
server.serve_forever()
