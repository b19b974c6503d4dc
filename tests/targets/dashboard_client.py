"""A page of ``autodbg web`` without a browser, for a host the test cannot reach (a namespace).

Usage: ``dashboard_client.py URL RANK COMMAND ANSWER``. Logs in with the URL's
token, waits for RANK's waiting session, opens its console through the
dashboard, sends COMMAND until ANSWER is in the console, then asks for the
job's stacks and for ``cast all p rank``. Prints one JSON object: the
sessions listed, the console's text, the stacks and the cast.
"""

import http.client
import json
import socket
import sys
import time
import urllib.parse

from websockets.sync.client import connect

DEADLINE = time.monotonic() + 120


def left():
    remaining = DEADLINE - time.monotonic()
    if remaining <= 0:
        raise SystemExit("dashboard_client: out of time")
    return remaining


def main(url, rank, command, answer):
    parts = urllib.parse.urlsplit(url)
    login = http.client.HTTPConnection(parts.hostname, parts.port, timeout=left())
    login.request("GET", f"/?{parts.query}")
    cookie = login.getresponse().getheader("Set-Cookie").split(";")[0]
    login.close()
    origin = f"http://{parts.hostname}:{parts.port}"
    with connect(
        f"ws://{parts.hostname}:{parts.port}/ws",
        sock=socket.create_connection((parts.hostname, parts.port), timeout=left()),
        origin=origin,
        additional_headers={"Cookie": cookie},
        open_timeout=left(),
    ) as ws:
        seen = {"console": ""}

        def until(done):
            while not done():
                message = json.loads(ws.recv(left()))
                if message["type"] == "table":
                    seen["sessions"] = message["sessions"]
                elif message["type"] == "console":
                    seen["console"] += message["text"]
                elif message["type"] in ("stacks", "cast"):
                    seen[message["type"]] = message["text"]

        def session():
            for row in seen.get("sessions", ()):
                if row["rank"] == rank and row["state"] == "waiting":
                    return row
            return None

        until(session)
        ws.send(json.dumps({"type": "open", "key": session()["key"]}))
        ws.send(json.dumps({"type": "input", "key": session()["key"], "text": command}))
        until(lambda: answer in seen["console"])
        ws.send(json.dumps({"type": "close", "key": session()["key"]}))
        ws.send(json.dumps({"type": "stacks"}))
        until(lambda: "stacks" in seen)
        ws.send(json.dumps({"type": "cast", "ranks": "all", "command": "p rank"}))
        until(lambda: "cast" in seen)
    print(json.dumps(seen))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4])
