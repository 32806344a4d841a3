# free_port: prints a loopback TCP port nothing listens on, never one this script was given
# before (the kernel may hand the same free port out twice; two servers given one port
# would silently share a data directory or fail to start). Source it; the ports handed
# out are remembered in a small file under /tmp (left behind: a few bytes per run).
PGSHARD_PORTS_TAKEN=${PGSHARD_PORTS_TAKEN:-$(mktemp /tmp/pgshard-ports-XXXXXX)}
free_port() {
  /usr/bin/python3 - "$PGSHARD_PORTS_TAKEN" <<'PY'
import socket, sys
path = sys.argv[1]
taken = set(open(path).read().split())
while True:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = str(s.getsockname()[1])
    s.close()
    if port not in taken:
        break
with open(path, "a") as f:
    f.write(port + "\n")
print(port)
PY
}
