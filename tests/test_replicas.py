"""Two real app replicas (``python app.py``) behind the real proxy (Debian's Caddy, ``deploy/Caddyfile``).

Each replica names itself in an ``X-Lab-Replica`` header; the proxy's JSON access log records, for every
request, the header a test client sent (``X-Lab-Test-Client``) and the replica that answered, so the
test can see where each of a client's requests went, the queue's event stream included.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from lab.sources import publish_folder
from tests.helpers import free_port

COOKIE = "lab_replica"  # deploy/Caddyfile's `lb_policy cookie lab_replica`
REPLICAS = {"replica-1", "replica-2"}
CALLS = 3
# True once the page's gpt2 column shows exactly `text` (a space shows as "·").
GPT2_TOKENS_READ = """(text) => [
    ...document.querySelectorAll('#token-columns .col[data-tokenizer="gpt2"] .toks .t')
].map((t) => t.innerText).join('') === text"""


def distinct_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from lab import replicas

    try:
        replicas.caddy()
    except Exception as error:
        pytest.fail(f"{error} (`make test` installs it)")
    first, second, proxy = distinct_ports(3)
    # A cache of their own, empty, which both fill at once on their first call, as replicas do.
    env = {**os.environ, "LAB_CACHE_DIR": str(tmp_path_factory.mktemp("replica-cache"))}
    log_dir = tmp_path_factory.mktemp("replicas")
    with replicas.running([first, second], proxy, log_dir=log_dir, env=env) as running:
        yield running


def sticky_cookies(url: str) -> dict[str, str]:
    """The proxy's cookie for each replica: fresh visitors (no cookie) until both replicas have answered."""
    import httpx

    cookies: dict[str, str] = {}
    for _ in range(64):  # the proxy places a fresh visitor at random: 2^-63 odds of never meeting one
        response = httpx.get(url + "/config", timeout=60)
        assert response.status_code == 200
        assert COOKIE in response.cookies, "the proxy set no sticky cookie"
        cookies.setdefault(response.headers["x-lab-replica"], response.cookies[COOKIE])
        if set(cookies) == REPLICAS:
            return cookies
    raise AssertionError(f"only {sorted(cookies)} answered 64 fresh visitors")


def access_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def replicas_by_client(
    path: Path, clients: list[str], streams_each: int = CALLS, timeout: float = 60
) -> dict[str, list[str]]:
    """Each test client's requests in the proxy's log: the replica of each, once every client's
    ``streams_each`` queue streams have been logged (a request is logged when its response ends)."""
    deadline = time.monotonic() + timeout
    while True:
        seen: dict[str, list[str]] = defaultdict(list)
        streams: dict[str, int] = defaultdict(int)
        for entry in access_log(path):
            client = entry["request"]["headers"].get("X-Lab-Test-Client", [None])[0]
            if client in clients:
                seen[client].extend(entry["resp_headers"].get("X-Lab-Replica", ["(none)"]))
                streams[client] += entry["request"]["uri"].startswith("/gradio_api/queue/data")
        if all(streams[c] >= streams_each for c in clients) or time.monotonic() > deadline:
            return dict(seen)
        time.sleep(0.5)


@pytest.mark.slow
def test_every_session_stays_on_one_replica_and_both_replicas_serve(deployment):
    from gradio_client import Client

    cookies = sticky_cookies(deployment.url)
    # Clients pinned by a cookie they were handed (as a browser that loaded the page), and clients left to
    # pick theirs up themselves: gradio_client keeps the cookie of its first response (/config).
    pinned = {f"pinned-{name}": {COOKIE: value} for name, value in sorted(cookies.items())}
    plain = {f"plain-{i}": {} for i in range(2)}
    clients = {**pinned, **plain}

    def session(label: str) -> tuple[list[list[str]], dict[str, str]]:
        client = Client(
            deployment.url,
            verbose=False,
            headers={"X-Lab-Test-Client": label},
            httpx_kwargs={"cookies": dict(clients[label])},
        )
        try:
            texts = [f"{label} call {i}" for i in range(CALLS)]
            return [client.predict(t, ["gpt2"], api_name="/tokenize")[0]["tokens"] for t in texts], dict(
                client.cookies
            )
        finally:
            client.close()

    with ThreadPoolExecutor(len(clients)) as pool:
        results = dict(zip(clients, pool.map(session, clients)))

    for label, (answers, client_cookies) in results.items():
        assert ["".join(tokens) for tokens in answers] == [f"{label} call {i}" for i in range(CALLS)]
        assert COOKIE in client_cookies, f"{label} kept no sticky cookie"

    served = replicas_by_client(deployment.access_log, list(clients))
    for label in clients:
        assert len(served.get(label, [])) >= 2 * CALLS, f"{label}: {served.get(label)}"  # join + data each
        assert len(set(served[label])) == 1, f"{label}'s requests went to {sorted(set(served[label]))}"
    for name in cookies:
        assert set(served[f"pinned-{name}"]) == {name}
    assert set().union(*map(set, served.values())) == REPLICAS


def read_events(url: str, cookie: str, session_hash: str) -> list[dict[str, Any]]:
    """The queue's server-sent events for one session, read until the stream closes."""
    import httpx

    events = []
    params = {"session_hash": session_hash}
    try:
        with httpx.stream("GET", url, params=params, cookies={COOKIE: cookie}, timeout=60) as response:
            for line in response.iter_lines():
                if line.startswith("data:"):
                    events.append(json.loads(line.removeprefix("data:")))
                    if events[-1]["msg"] in {"close_stream", "unexpected_error"}:
                        break
    except httpx.HTTPError:
        pass  # the replica ends the stream abruptly after saying it does not know the session
    return events


@pytest.mark.slow
def test_a_queued_call_is_answered_only_by_the_replica_that_took_it(deployment):
    """Why sessions must stick: the queue's join and its result stream must reach the same replica."""
    import httpx

    cookies = sticky_cookies(deployment.url)
    mine, other = cookies["replica-1"], cookies["replica-2"]
    config = httpx.get(deployment.url + "/config", cookies={COOKIE: mine}, timeout=60).json()
    fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "tokenize")
    session_hash = uuid.uuid4().hex
    joined = httpx.post(
        deployment.url + "/gradio_api/queue/join",
        json={"data": ["sticky sessions", ["gpt2"]], "fn_index": fn_index, "session_hash": session_hash},
        cookies={COOKIE: mine},
        timeout=60,
    )
    assert joined.status_code == 200 and joined.headers["x-lab-replica"] == "replica-1"

    stream = deployment.url + "/gradio_api/queue/data"
    elsewhere = read_events(stream, other, session_hash)
    assert elsewhere and elsewhere[0]["msg"] == "unexpected_error" and elsewhere[0]["session_not_found"]

    here = read_events(stream, mine, session_hash)
    completed = [e for e in here if e["msg"] == "process_completed"]
    assert len(completed) == 1 and completed[0]["success"], here
    assert completed[0]["output"]["data"][0][0]["tokens"] == ["stick", "y", " sessions"]


def test_a_replica_publishing_a_folder_another_already_published_keeps_the_first(tmp_path):
    """Replicas share LAB_CACHE_DIR: two may unpack the same tokenizer at once; the second rename loses."""
    folder = tmp_path / "gpt2"
    for writer in ("first", "second"):
        partial = tmp_path / f"gpt2.partial-{writer}"
        partial.mkdir()
        (partial / "tokenizer.json").write_text(writer)
        publish_folder(partial, folder)
        assert not partial.exists()
    assert (folder / "tokenizer.json").read_text() == "first"
    with pytest.raises(OSError):  # any other failure still shows
        publish_folder(tmp_path / "missing.partial", tmp_path / "elsewhere")


@pytest.mark.slow
@pytest.mark.browser
def test_two_readers_in_browsers_each_stay_on_their_replica(deployment, browser):
    """The page itself through the proxy: assets, its load events, a typed text; one replica each."""
    cookies = sticky_cookies(deployment.url)
    for name, value in sorted(cookies.items()):
        label = f"browser-{name}"
        context = browser.new_context(extra_http_headers={"X-Lab-Test-Client": label})
        try:
            context.add_cookies([{"name": COOKIE, "value": value, "url": deployment.url}])
            page = context.new_page()
            # The tab reads its text and tokenizers from the address (one tokenizer: a cold replica
            # would take a minute here to load the whole preset), in a load event and its follow-up.
            page.goto(f"{deployment.url}/?" + urlencode({"text": f"{name} here", "tok": "gpt2"}))
            page.wait_for_function(GPT2_TOKENS_READ, arg=f"{name}·here", timeout=90_000)
        finally:
            context.close()
    labels = [f"browser-{name}" for name in cookies]
    served = replicas_by_client(deployment.access_log, labels, streams_each=1)
    for name in cookies:
        assert set(served.get(f"browser-{name}", [])) == {name}, served.get(f"browser-{name}")


@pytest.mark.slow
def test_readers_of_a_replica_that_stops_move_to_another(deployment):
    """Runs last in this module: it stops replica-1 for good."""
    import httpx
    from gradio_client import Client

    cookies = sticky_cookies(deployment.url)
    gone = deployment.replicas[0]
    assert gone.name == "replica-1"
    gone.popen.terminate()
    gone.popen.wait(30)

    moved = httpx.get(deployment.url + "/config", cookies={COOKIE: cookies["replica-1"]}, timeout=60)
    assert moved.status_code == 200 and moved.headers["x-lab-replica"] == "replica-2"
    assert moved.cookies[COOKIE] == cookies["replica-2"]  # the reader is re-pinned, not bounced around
    client = Client(deployment.url, verbose=False, httpx_kwargs={"cookies": {COOKIE: cookies["replica-1"]}})
    try:
        assert client.predict("still here", ["gpt2"], api_name="/tokenize")[0]["tokens"] == ["still", " here"]
    finally:
        client.close()
