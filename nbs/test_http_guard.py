"""phoalign.http's defences against hostile clients, on a real uvicorn on 127.0.0.1 (bounded loops, each test under ~15 s).

The app is a toy (GET /search echoes, POST /search reads an upload with `read_upload`), so these tests need no model.
"""
import asyncio, contextlib, http.client, select, socket, threading, time
import pytest, uvicorn
from fastapi import FastAPI, Request
from phoalign.http import (FORM_FRAMING, Guard, Refused, api_docs_urls, default_allowed_hosts, read_upload, refused_handler,
                           server_config)

MiB = 2**20


class CountBody:
    "ASGI middleware counting the request body bytes the app took from the server (`app.state.consumed`)."
    def __init__(self, app, state): self.app, self.state = app, state
    async def __call__(self, scope, receive, send):
        async def counted():
            message = await receive()
            self.state.consumed += len(message.get('body', b''))
            return message
        await self.app(scope, counted, send)


def make_app(limit=2 * MiB, **guard):
    "The toy app, behind a `Guard(**guard)` when given."
    app = FastAPI(**api_docs_urls(False))
    app.state.consumed = 0
    app.add_exception_handler(Refused, refused_handler)

    @app.get('/')
    async def page(): return 'page'

    @app.get('/search')
    async def search(q: str = '', delay: float = 0):
        if delay: await asyncio.sleep(delay)
        return {'q': q}

    @app.post('/search')
    async def upload(request: Request):
        data, fields = await read_upload(request, limit)
        return {'bytes': len(data), 'fields': fields}

    app.add_middleware(CountBody, app.state)
    if guard: app.add_middleware(Guard, **guard)
    return app


@contextlib.contextmanager
def running(app, **config):
    "uvicorn serving `app` on a free port of 127.0.0.1 in a thread, as `phoalign serve` runs it: yields (server, port)."
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(('127.0.0.1', 0)); sock.listen(2048)
    server = uvicorn.Server(server_config(app, timeout_graceful_shutdown=1, **config))
    thread = threading.Thread(target=server.run, kwargs=dict(sockets=[sock]), daemon=True)
    thread.start()
    t0 = time.monotonic()
    while not server.started and time.monotonic() - t0 < 10: time.sleep(0.01)
    assert server.started
    try: yield server, sock.getsockname()[1]
    finally:
        server.should_exit = True; thread.join(10); sock.close()


def request(port, path='/search', method='GET', headers=None, body=None, timeout=5):
    "One request on a fresh connection: (status, headers as a dict, body)."
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally: conn.close()


def closed(sock, timeout) -> bool:
    "Whether the server closed `sock` within `timeout` seconds (EOF or reset)."
    if not select.select([sock], [], [], timeout)[0]: return False
    try: return sock.recv(4096) == b''
    except (ConnectionResetError, BrokenPipeError): return True


def read_reply(sock, reply=b'', timeout=2) -> bytes:
    "The rest of one response on `sock` (its head and a Content-Length body), or what came before EOF, a reset or `timeout`."
    sock.settimeout(timeout)
    try:
        while True:
            head, _, body = reply.partition(b'\r\n\r\n')
            length = [int(l.split(b':')[1]) for l in head.lower().split(b'\r\n') if l.startswith(b'content-length:')]
            if _ and length and len(body) >= length[0]: return reply
            if not (data := sock.recv(65536)): return reply
            reply += data
    except OSError: return reply


def test_chunked_upload_refused_while_streaming():
    app = make_app(limit=2 * MiB)
    with running(app) as (server, port):
        s = socket.create_connection(('127.0.0.1', port)); s.setblocking(False)
        head = (b'POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n'
                b'Content-Type: multipart/form-data; boundary=B\r\n\r\n')
        part = b'--B\r\nContent-Disposition: form-data; name="image"; filename="big.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        block = b'\xff' * (64 * 1024)
        frames = (f'{len(b):x}\r\n'.encode() + b + b'\r\n' for b in [part] + [block] * (200 * MiB // len(block)))  # 200 MiB, lazily
        pending, sent, reply, t0 = head, 0, b'', time.monotonic()
        while time.monotonic() - t0 < 12:
            readable, writable, _ = select.select([s], [s] if pending is not None else [], [], 1)
            if readable:
                try: data = s.recv(65536)
                except ConnectionResetError: break
                reply += data
                if not data or b'\r\n\r\n' in reply: break
            if writable:
                try: n = s.send(pending)
                except (BrokenPipeError, ConnectionResetError): break
                sent += n; pending = pending[n:] or next(frames, None)
        reply = read_reply(s, reply); s.close()
        assert reply.startswith(b'HTTP/1.1 413'), reply[:200]
        assert b'at most 2 MiB' in reply
        assert app.state.consumed <= 2 * MiB + FORM_FRAMING + 256 * 1024, app.state.consumed   # the limit and one chunk
        assert sent < 50 * MiB, sent                                                          # the rest was never taken
        print(f'\nchunked 200 MiB: 413 after the app took {app.state.consumed / MiB:.2f} MiB, the client sent {sent / MiB:.1f} MiB')
        status, _, body = request(port, '/search?q=still')
        assert (status, body) == (200, b'{"q":"still"}')


def test_content_length_over_limit_refused_unread():
    app = make_app(limit=2 * MiB)
    with running(app) as (server, port):
        s = socket.create_connection(('127.0.0.1', port), timeout=5)
        s.sendall(b'POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\nContent-Length: 209715200\r\n\r\n' + b'x' * 1000)
        reply = read_reply(s); s.close()
        assert reply.startswith(b'HTTP/1.1 413') and b'the upload is 200.0 MiB: at most 2 MiB' in reply, reply
        assert app.state.consumed == 0
        assert request(port, '/search', 'POST', {'Content-Type': 'image/jpeg'}, b'\xff\xd8' + b'x' * 1000)[2] == b'{"bytes":1002,"fields":{}}'


def test_half_headers_closed_and_never_delay_a_query():
    with running(make_app(), header_timeout=2) as (server, port):
        t0 = time.monotonic()
        slow = [socket.create_connection(('127.0.0.1', port)) for _ in range(150)]
        for s in slow: s.sendall(b'GET /search HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ')
        t1 = time.monotonic()
        status, _, _ = request(port, '/search?q=now')
        took = time.monotonic() - t1
        assert status == 200 and took < 0.5, took
        assert not any(closed(s, 0) for s in slow)                             # still open before the timeout
        for s in slow: s.send(b'a')                                            # trickling in does not reset the clock
        deadline, shut = t0 + 2 + 2, 0
        for s in slow: shut += closed(s, max(0, deadline - time.monotonic()))
        print(f'\n150 half heads: {shut} closed {time.monotonic() - t0:.1f} s after connecting; a query meanwhile took {took * 1000:.0f} ms')
        assert shut == 150
        for s in slow: s.close()
        assert request(port, '/search?q=after')[0] == 200


def test_connections_beyond_max_closed():
    with running(make_app(), max_connections=20) as (server, port):
        held = []
        for _ in range(40): held.append(socket.create_connection(('127.0.0.1', port))); time.sleep(0.005)
        time.sleep(0.5)
        shut = [closed(s, 0) for s in held]
        assert shut == [False] * 20 + [True] * 20, shut                        # the first 20 kept, the rest closed at once
        with pytest.raises((ConnectionError, http.client.RemoteDisconnected)): request(port, '/search')   # full
        for s in held: s.close()
        t0 = time.monotonic()
        while len(server.server_state.connections) and time.monotonic() - t0 < 5: time.sleep(0.05)
        assert request(port, '/search?q=back')[0] == 200                       # serving again once they went


def test_hosts():
    with running(make_app(allowed_hosts=default_allowed_hosts('127.0.0.1'))) as (server, port):
        status, _, body = request(port, headers={'Host': 'attacker.example'})
        assert status == 400 and b"Host header 'attacker.example' is not allowed" in body and b'--allowed-host' in body
        for host in [f'localhost:{port}', f'127.0.0.1:{port}', 'LOCALHOST']:
            assert request(port, headers={'Host': host})[0] == 200, host
    with running(make_app(allowed_hosts=['example.org'])) as (server, port):
        assert (request(port, headers={'Host': 'example.org:80'})[0], request(port, headers={'Host': 'localhost'})[0]) == (200, 400)


def test_token():
    with running(make_app(token='s3cret')) as (server, port):
        status, headers, body = request(port, '/search?q=a')
        assert (status, headers['www-authenticate']) == (401, 'Bearer') and b'needs its token' in body
        status, _, body = request(port, '/')
        assert status == 401 and b'login link' in body                         # the page says what to do
        assert request(port, '/search?q=a', headers={'Authorization': 'Bearer s3cret'})[2] == b'{"q":"a"}'
        assert request(port, '/search?q=a', headers={'Authorization': 'Bearer wrong'})[0] == 401
        status, headers, _ = request(port, '/?token=s3cret')                  # the login link serve prints
        assert (status, headers['location']) == (303, '/')
        cookie = headers['set-cookie']
        assert cookie.startswith('phoalign_token=s3cret;') and 'HttpOnly' in cookie and 'SameSite=strict' in cookie
        assert request(port, '/', headers={'Cookie': cookie.split(';')[0]})[:3:2] == (200, b'"page"')
        assert request(port, '/search', headers={'Cookie': 'phoalign_token=wrong'})[0] == 401
        assert request(port, '/?token=wrong')[0] == 401


def keep_alive_codes(port, n, path='/search'):
    "n requests on one keep-alive connection, as fast as they go: their statuses and Retry-After headers."
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=5)
    out = []
    for _ in range(n):
        conn.request('GET', path); r = conn.getresponse(); r.read()
        out.append((r.status, r.getheader('retry-after')))
    conn.close()
    return out


def test_rate():
    with running(make_app(rate=2)) as (server, port):
        got = keep_alive_codes(port, 12)
        assert got[:4] == [(200, None)] * 4                                    # a burst of 2 × rate
        assert (429, '1') in got[4:], got
        assert {s for s, _ in keep_alive_codes(port, 10, '/')} == {200}        # the page is not counted
    with running(make_app(rate=0)) as (server, port):
        assert {s for s, _ in keep_alive_codes(port, 30)} == {200}


def test_max_concurrency():
    with running(make_app(max_concurrency=2)) as (server, port):
        results = [None] * 6
        def ask(i):
            t0 = time.monotonic(); status, headers, _ = request(port, '/search?delay=1')
            results[i] = (status, headers.get('retry-after'), time.monotonic() - t0)
        threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
        for t in threads: t.start()
        for t in threads: t.join(10)
        busy = [r for r in results if r[0] == 503]
        assert len(busy) >= 1 and {r[1] for r in busy} == {'1'}, results
        assert all(r[2] < 0.9 for r in busy), results                         # refused at once, not queued
        assert all(r[0] == 200 for r in results if r[0] != 503), results
        assert request(port, '/search?q=after')[0] == 200


def test_long_query_string_refused():
    with running(make_app(max_url=8192)) as (server, port):
        status, _, body = request(port, '/search?q=' + 'a' * 100_000)
        assert (status, body) == (414, b'{"error":"the address is 100009 bytes long: at most 8192"}')
        s = socket.create_connection(('127.0.0.1', port), timeout=5)             # arriving in pieces: h11's own bound (16 KiB)
        s.sendall(b'GET /search?q=' + b'a' * 50_000); time.sleep(0.2); s.sendall(b'a' * 50_000)
        assert s.recv(4096).startswith(b'HTTP/1.1 400'); s.close()
        assert request(port, '/search?q=' + 'a' * 1000)[0] == 200
        conn = http.client.HTTPConnection('127.0.0.1', port, timeout=5)       # a keep-alive client: no 40 ms per answer
        conn.request('GET', '/search'); conn.getresponse().read()
        sockets = [c.transport.get_extra_info('socket') for c in server.server_state.connections]
        assert [s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0 for s in sockets] == [True]
        conn.close()
