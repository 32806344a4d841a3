"""Opens N idle PostgreSQL connections to host:port (trust auth), holds them, then closes them.
With a sixth argument, each connection first runs that statement (simple Query) once, as a
pooled application's connections have before they idle.

Prints "ready N" once every connection has had its ReadyForQuery, waits for a line on stdin,
closes all connections and prints "closed". Plain sockets (no driver) so that 10,000 clients
cost the client side little.
"""
import selectors
import socket
import struct
import sys


def startup(user, db):
    body = struct.pack("!i", 196608)
    for k, v in (("user", user), ("database", db), ("application_name", "idle")):
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!i", len(body) + 4) + body


def main():
    host, port, n, user, db = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    query = sys.argv[6] if len(sys.argv) > 6 else ""
    queried = set()  # connections whose statement is sent
    sel = selectors.DefaultSelector()
    socks, pending = [], {}
    msg = startup(user, db)
    batch = 200  # connections in flight at once (pgshard bounds startups too)
    opened = ready = 0
    while ready < n:
        while opened < n and len(pending) < batch:
            s = socket.create_connection((host, port))
            s.sendall(msg)
            s.setblocking(False)
            pending[s] = b""
            sel.register(s, selectors.EVENT_READ)
            socks.append(s)
            opened += 1
        for key, _ in sel.select(timeout=10):
            s = key.fileobj
            data = s.recv(65536)
            if not data:
                sys.exit(f"connection closed after {ready} ready: is max_client_conn large enough?")
            buf = pending[s] + data
            # Walk whole messages: 'E' is an error, 'Z' (ReadyForQuery) ends the login.
            done = False
            while len(buf) >= 5:
                t, ln = buf[0:1], struct.unpack("!i", buf[1:5])[0]
                if len(buf) < 1 + ln:
                    break
                if t == b"E":
                    sys.exit("login failed: " + buf[5:1 + ln].decode(errors="replace"))
                if t == b"Z":
                    done = True
                buf = buf[1 + ln:]
            if done and query and s not in queried:
                body = query.encode() + b"\0"
                s.sendall(b"Q" + struct.pack("!i", len(body) + 4) + body)
                queried.add(s)
                done = False
            if done:
                sel.unregister(s)
                del pending[s]
                ready += 1
            else:
                pending[s] = buf
    print(f"ready {ready}", flush=True)
    sys.stdin.readline()
    for s in socks:
        s.close()
    print("closed", flush=True)


main()
