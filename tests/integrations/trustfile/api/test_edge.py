"""The extractor API's edges, against a real server (uvicorn on 127.0.0.1, mounted under /extractor as
Airflow mounts it): the token checked before a body is read, a size limit on every body, bad input
answered 400 naming the rule (never 500, never 503), and a PUT that races a DELETE answered 404."""
from __future__ import annotations

import json
import secrets
import socket
import threading
import time
from urllib.parse import urlsplit

import psycopg
import pytest
import requests

ID_RULE = ("a connection id is 1 to 100 characters: letters, digits, '.', '_', '@' and '-', "
           "starting with a letter or a digit")
LIMIT = 16 * 1024
TOO_LARGE = {"message": f"the request body is over the limit of {LIMIT} bytes"}
UNAUTHORIZED = {"message": "You are not authorized"}
# Random, so PostgreSQL cannot compress them under the btree's row size limit (a repeated letter would fit).
LONG_ID = secrets.token_hex(5_000)   # 10,000 characters: a body that still fits the size limit
HUGE_ID = secrets.token_hex(10_000)


def exchange(base: str, request_line: str, *header_lines: str) -> tuple[int, dict | None]:
    """Send a request's head, none of the body it announces, over a raw socket; the status and the JSON
    answer, which must come without the body (a server that waits for it times out here)."""
    parts = urlsplit(base)
    method, path = request_line.split(" ", 1)
    head = "".join(f"{line}\r\n" for line in (f"{method} {parts.path}{path} HTTP/1.1", f"Host: {parts.netloc}",
                                                 *header_lines))
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        sock.sendall(head.encode() + b"\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < length(answer):
            chunk = sock.recv(65536)
            assert chunk, f"the server closed the connection after {answer!r}"
            answer += chunk
    header, _, rest = answer.partition(b"\r\n\r\n")
    return int(header.split()[1]), json.loads(rest) if rest else None


def length(answer: bytes) -> int:
    header = answer.partition(b"\r\n\r\n")[0].lower()
    return int(header.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0]) if b"content-length:" in header else 0


@pytest.fixture
def api(serve):
    return serve()


# ---- 1. the token before the body, a size limit, 401 for anything unauthenticated ----------------------

def test_the_token_is_checked_before_the_body_is_read(api):
    """Announced 50 MB, none of it sent: the answer comes at once, without waiting for the body."""
    assert exchange(api, "POST /connections", "Content-Type: application/json",
                    "Content-Length: 50000000") == (401, UNAUTHORIZED)


@pytest.mark.parametrize("auth_header", [None, "Bearer wrong"], ids=["missing", "wrong"])
def test_malformed_json_without_a_token_is_a_401(api, auth_header):
    sent = {"Content-Type": "application/json", **({"Authorization": auth_header} if auth_header else {})}
    response = requests.post(f"{api}/connections", data=b'{"connectionId": ', headers=sent, timeout=10)
    assert (response.status_code, response.json()) == (401, UNAUTHORIZED)


def test_anything_unauthenticated_is_a_401_and_every_answer_is_a_message(api, auth):
    assert requests.get(f"{api}/no/such/route", timeout=10).status_code == 401
    unknown = requests.get(f"{api}/no/such/route", headers=auth, timeout=10)
    assert (unknown.status_code, unknown.json()) == (404, {"message": "Not Found"})
    wrong_method = requests.patch(f"{api}/connections", headers=auth, timeout=10)
    assert (wrong_method.status_code, wrong_method.json()) == (405, {"message": "Method Not Allowed"})
    health_post = requests.post(f"{api}/health", timeout=10)   # an open path: its other methods are a 405
    assert (health_post.status_code, health_post.json(), health_post.headers["Allow"]) == (
        405, {"message": "Method Not Allowed"}, "GET")
    assert wrong_method.headers["Allow"] == "GET, POST"


def test_a_declared_body_over_the_limit_is_a_413_before_it_is_read(api, auth):
    assert exchange(api, "POST /connections", f"Authorization: {auth['Authorization']}",
                    "Content-Type: application/json", f"Content-Length: {LIMIT + 1}") == (413, TOO_LARGE)


def test_the_open_routes_have_the_limit_too(api):
    assert exchange(api, "GET /oauth/qbo/callback?state=x", f"Content-Length: {LIMIT + 1}") == (413, TOO_LARGE)


def padded(connection_id: str, size: int) -> bytes:
    """A valid JSON body of exactly `size` bytes (whitespace before the closing brace)."""
    start = json.dumps({"connectionId": connection_id}).encode()[:-1]
    return start + b" " * (size - len(start) - 1) + b"}"


def test_a_streamed_body_over_the_limit_is_a_413_and_nothing_is_stored(api, auth):
    body = padded("big", LIMIT + 1)
    chunks = (body[i:i + 1000] for i in range(0, len(body), 1000))   # chunked: no Content-Length to judge by
    response = requests.post(f"{api}/connections", data=chunks, timeout=10,
                             headers={**auth, "Content-Type": "application/json"})
    assert (response.status_code, response.json()) == (413, TOO_LARGE)
    assert requests.get(f"{api}/connections/big", headers=auth, timeout=10).status_code == 404


def test_a_body_at_the_limit_is_read(api, auth):
    body = padded("at-limit", LIMIT)
    chunks = (body[i:i + 1000] for i in range(0, len(body), 1000))
    streamed = requests.post(f"{api}/connections", data=chunks, headers={**auth, "Content-Type": "application/json"},
                             timeout=10)
    assert streamed.status_code == 200
    declared = requests.post(f"{api}/connections", data=padded("at-limit-2", LIMIT), timeout=10,
                             headers={**auth, "Content-Type": "application/json"})
    assert declared.status_code == 200


# ---- 4, 5, 6. ids and values the database cannot take are a 400 that says the rule ---------------------

@pytest.mark.parametrize("connection_id", ["a\x00b", LONG_ID, "x" * 101, "a/b", "\ud800", " c1", "..", "a b",
                                           "é"], ids=["nul", "10000-chars", "101-chars", "slash", "lone-surrogate",
                                                      "leading-space", "dots", "space", "non-ascii"])
def test_a_connection_id_outside_the_rule_is_refused_when_created(api, auth, connection_id):
    body = json.dumps({"connectionId": connection_id}).encode()   # ensure_ascii: the surrogate travels as \ud800
    response = requests.post(f"{api}/connections", data=body, headers={**auth, "Content-Type": "application/json"},
                             timeout=30)
    assert (response.status_code, response.json()) == (400, {"message": ID_RULE})
    assert requests.get(f"{api}/connections", headers=auth, timeout=10).json() == {"connections": []}


@pytest.mark.parametrize("method", ["HEAD", "GET", "PUT", "DELETE"])
@pytest.mark.parametrize("quoted_id", ["a%00b", HUGE_ID, "x" * 101, "%20c1", "%C3%A9"],
                         ids=["nul", "20000-chars", "101-chars", "leading-space", "non-ascii"])
def test_a_connection_id_outside_the_rule_in_the_path_is_a_400(api, auth, method, quoted_id):
    response = requests.request(method, f"{api}/connections/{quoted_id}", json={"enabled": True}, headers=auth,
                                timeout=30)
    assert response.status_code == 400
    if method != "HEAD":
        assert response.json() == {"message": ID_RULE}


def test_the_longest_id_the_rule_allows_works_end_to_end(api, auth):
    longest = "a" + "Z9._@-" * 16 + "abc"
    assert len(longest) == 100
    assert requests.post(f"{api}/connections", json={"connectionId": longest}, headers=auth, timeout=10).ok
    for method in ("HEAD", "GET", "PUT", "DELETE"):
        assert requests.request(method, f"{api}/connections/{longest}", json={"enabled": True}, headers=auth,
                                timeout=10).status_code == 200


def test_a_lone_surrogate_anywhere_in_a_body_is_a_400(api, auth):
    requests.post(f"{api}/connections", json={"connectionId": "c1"}, headers=auth, timeout=10)
    for path, body in (("/connections/c1", b'{"startDate": "\\ud800"}'), ("/connections/c1", b'{"\\ud800": 1}'),
                       ("/connections/c1", b'{"connectionId": "\\udfff"}'), ("/connector", b'{"enabled": "\\ud800"}')):
        response = requests.put(f"{api}{path}", data=body, headers={**auth, "Content-Type": "application/json"},
                                timeout=10)
        assert response.status_code == 400, (body, response.text)
        assert set(response.json()) == {"message"}


@pytest.mark.parametrize("query", ["?enabled=%00", "?enabled=%ED%A0%80", "?enabled=" + "x" * 20_000])
def test_odd_query_values_are_a_400(api, auth, query):
    response = requests.get(f"{api}/connections{query}", headers=auth, timeout=10)
    assert (response.status_code, response.json()) == (400, {"message": "enabled must be true or false"})


# ---- 7. PUT racing DELETE ----------------------------------------------------------------------------------

def test_a_put_that_races_a_delete_is_a_404_not_a_500(api, auth, db_url):
    """The DELETE holds the row (uncommitted) while the PUT arrives; once it commits, the PUT finds
    the connection gone: 404, not a foreign-key violation on the activity it would have written."""
    assert requests.post(f"{api}/connections", json={"connectionId": "c1"}, headers=auth, timeout=10).ok
    with psycopg.connect(db_url) as deleter:
        deleter.execute("DELETE FROM trustfile.connections WHERE connection_id = 'c1'")
        answers = []
        putter = threading.Thread(target=lambda: answers.append(
            requests.put(f"{api}/connections/c1", json={"enabled": True}, headers=auth, timeout=30)))
        putter.start()
        with psycopg.connect(db_url, autocommit=True) as watcher:
            deadline = time.monotonic() + 10
            while not watcher.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                      "AND datname = current_database()").fetchone()[0]:
                assert time.monotonic() < deadline, "the PUT never waited for the DELETE's row lock"
                time.sleep(0.02)
        deleter.commit()
        putter.join(timeout=30)
    assert (answers[0].status_code, answers[0].json()) == (404, {"message": "Unknown connection c1"})


def test_puts_and_deletes_in_parallel_never_answer_500(api, auth):
    def put(i):
        return requests.put(f"{api}/connections/r{i % 3}", json={"enabled": bool(i % 2)}, headers=auth, timeout=30)

    def delete(i):
        return requests.delete(f"{api}/connections/r{i % 3}", headers=auth, timeout=30)

    statuses = []
    for _ in range(5):
        for i in range(3):
            requests.post(f"{api}/connections", json={"connectionId": f"r{i}"}, headers=auth, timeout=10)
        threads = [threading.Thread(target=lambda f=f, i=i: statuses.append(f(i).status_code))
                   for i in range(6) for f in (put, delete)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert len(statuses) == 60 and set(statuses) <= {200, 404}


# ---- a deadlock or serialization failure is transient: 503, try again ------------------------------------

@pytest.mark.parametrize(("sqlstate", "what"), [("40P01", "deadlock detected"),
                                                ("40001", "could not serialize access")])
def test_a_deadlock_or_a_serialization_failure_is_a_503_to_try_again(api, auth, db_url, sqlstate, what):
    """PostgreSQL aborts one of two conflicting transactions with these; the same request sent again
    works. Raised here by the real server, from a trigger on the activity a new connection writes."""
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute(f"CREATE FUNCTION trustfile.test_conflict() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                      f"RAISE EXCEPTION '{what}' USING ERRCODE = '{sqlstate}'; END $$")
        admin.execute("CREATE TRIGGER test_conflict BEFORE INSERT ON trustfile.activities "
                      "FOR EACH ROW EXECUTE FUNCTION trustfile.test_conflict()")
        try:
            response = requests.post(f"{api}/connections", json={"connectionId": "c1"}, headers=auth, timeout=10)
        finally:
            admin.execute("DROP TRIGGER test_conflict ON trustfile.activities")
            admin.execute("DROP FUNCTION trustfile.test_conflict()")
    assert (response.status_code, response.json()) == (
        503, {"message": "the extractor's database stopped this request to resolve a conflict with another one; "
                         "try again"})
    assert requests.post(f"{api}/connections", json={"connectionId": "c1"}, headers=auth, timeout=10).ok
