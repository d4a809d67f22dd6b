"""Listens on the hooks socket the agent gives it and never answers: a silent workload."""
import os, socket, time
p = os.environ["STASIS_HOOKS_SOCKET"]
try: os.unlink(p)
except FileNotFoundError: pass
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(p); s.listen(16)
n = 0
while True:
    n += 1
    time.sleep(0.1)
