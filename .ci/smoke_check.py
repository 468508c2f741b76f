"""Log in to a running embedded demo and fetch the inbox; exit non-zero if anything is off."""

from __future__ import annotations

import re
import sys
import time

import httpx
from websockets.sync.client import connect

base = sys.argv[1]
deadline = time.monotonic() + 120
while True:
    try:
        login_page = httpx.get(f"{base}/login/", timeout=5)
        break
    except httpx.TransportError:
        if time.monotonic() > deadline:
            sys.exit("demo did not start within 120 s")
        time.sleep(0.5)

assert login_page.status_code == 200, login_page.status_code
assert 'name="password"' in login_page.text


def logged_in(username: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=10)
    page = client.get("/login/")
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert match, "no CSRF token on the login page"
    response = client.post(
        "/login/",
        data={"username": username, "password": "countersign-demo", "csrfmiddlewaretoken": match.group(1)},
        headers={"Referer": f"{base}/login/"},
    )
    assert response.status_code == 302, f"login as {username} failed: {response.status_code}"
    return client


reviewer = logged_in("reviewer")
inbox = reviewer.get("/")
assert inbox.status_code == 200, inbox.status_code
assert "Inbox" in inbox.text and 'ws-connect="/ws/inbox/"' in inbox.text
print(f"smoke: login page and inbox served by the embedded default at {base}")

# Live updates in the embedded mode: a run started by the operator reaches the
# reviewer's open socket (in-memory channel layer, in-process worker).
ws_url = base.replace("http://", "ws://") + "/ws/inbox/"
cookie = f"sessionid={reviewer.cookies['sessionid']}"
with connect(ws_url, additional_headers={"Cookie": cookie, "Origin": base}, open_timeout=10) as socket:
    operator = logged_in("operator")
    agents_page = operator.get("/agents/")
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', agents_page.text).group(1)
    started = time.monotonic()
    response = operator.post(
        "/agents/refund-triage/runs",
        data={
            "input": '{"ticket": "Arrived broken", "order_id": "ORD-1010", "amount": 250}',
            "csrfmiddlewaretoken": csrf,
        },
        headers={"Referer": f"{base}/agents/"},
    )
    assert response.status_code == 302, response.status_code
    # The socket also carries queue counts and sequence numbers: wait for the row itself.
    deadline = time.monotonic() + 10
    while 'hx-swap-oob="afterbegin:#inbox-rows"' not in (
        message := socket.recv(timeout=max(0.1, deadline - time.monotonic()))
    ):
        pass
    print(f"smoke: live inbox update arrived {1000 * (time.monotonic() - started):.0f} ms after the run started")
