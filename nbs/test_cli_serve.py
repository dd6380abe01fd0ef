"""`phoalign serve` as a user runs it: a fresh folder, relative paths, the bundled photos, and a real (headless) browser
that types a Vietnamese query into the page and uploads a photo; then hostile clients (slow, many, big or broken uploads,
other Host names), a server exposed beyond loopback with its token, an index that grows while served, typos, a port in
use and Ctrl-C."""
import http.client, io, json, os, re, shutil, signal, socket, subprocess, tempfile, threading, time, urllib.parse, urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import pytest
from test_cli_data import phoalign
from test_cli_search import gallery_and_model, run_json, assert_refused
import browser

QUERY = 'Cận cảnh một chú mèo mướp với đôi mắt xanh lục'   # typed into the page as a person would

def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def get_json(url:str):
    with urllib.request.urlopen(url, timeout=30) as r: return json.load(r)

def start_serve(root:Path, cwd:Path, *args, name='serve', headers=None):
    "`phoalign serve ARGS --port P` started in `cwd`, once it answers `/info`: `(process, url)`; its output in `root/name.out|err`."
    port = free_port()
    # its output goes to files, not pipes: a pipe nobody reads fills up with the request log and blocks the server
    proc = subprocess.Popen([shutil.which('phoalign'), 'serve', *map(str, args), '--port', str(port)], cwd=cwd,
                            stdout=open(root/f'{name}.out', 'w'), stderr=open(root/f'{name}.err', 'w'), text=True, env={**os.environ, 'HF_HUB_OFFLINE': '1'},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))   # Ctrl-C as a terminal gives it, whatever the worker ignores
    url, t0 = f'http://127.0.0.1:{port}/', time.time()
    while True:
        try: urllib.request.urlopen(urllib.request.Request(url + 'info', headers=headers or {}), timeout=30).read(); break
        except urllib.error.HTTPError: break                                   # it answers (401 without the token)
        except OSError:
            if proc.poll() is not None: pytest.fail(f'phoalign serve exited with {proc.returncode}: {(root/f"{name}.err").read_text()}')
            if time.time() - t0 > 120: proc.kill(); pytest.fail('phoalign serve did not answer in 120 s')
            time.sleep(0.2)
    return proc, url

@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "A gallery encoded from a fresh folder, served by `phoalign serve ../idx` started from another folder."
    root = gallery_and_model(tmp_path_factory.mktemp('serve'))
    run_json('encode', 'model.pt', '--images', 'gallery/captions_vi.json', '--out', 'idx', '--no-progress', cwd=root)
    (root/'elsewhere').mkdir()
    proc, url = start_serve(root, root/'elsewhere', '../idx', '--header-timeout', '2', '--max-decoding', '2', '--max-upload-mb', '2', '--rate', '0')
    yield root, url, proc
    if proc.poll() is None: proc.kill(); proc.wait(10)

def by_name(root:Path, cli_hits:list) -> list[str]:
    "The CLI's paths (relative to where it ran) as the server names them: relative to the gallery's root (its photos folder)."
    return [(root/h['path']).resolve().relative_to((root/'gallery'/'photos').resolve()).as_posix() for h in cli_hits]

@pytest.fixture(scope='module')
def chromium():
    if browser.find_chromium() is None:
        if browser.browser_required(): pytest.fail('no Chromium, and PHOALIGN_REQUIRE_BROWSER is set: apt-get install chromium')
        pytest.skip('no Chromium on this machine (apt-get install chromium)')
    with browser.Chromium(width=1280, height=900) as b: yield b

def screenshots() -> Path:
    "Where the page's screenshots go: `$PHOALIGN_SCREENSHOTS`, else a temporary folder (printed)."
    folder = Path(os.environ.get('PHOALIGN_SCREENSHOTS') or tempfile.mkdtemp(prefix='phoalign-serve-shots-'))
    folder.mkdir(parents=True, exist_ok=True)
    return folder

def test_api_answers_what_the_cli_answers(site):
    root, url, _ = site
    cli = run_json('search', 'idx', '--text', QUERY, '-k', '5', cwd=root)
    api = get_json(url + 'search?' + urllib.parse.urlencode(dict(q=QUERY, k=5)))
    assert [h['path'] for h in api['results']] == by_name(root, cli)   # relative to the gallery's root: never the server's own paths
    assert not any(str(root) in h['path'] or h['path'].startswith('/') for h in api['results'])
    assert [round(h['score'], 4) for h in api['results']] == [round(h['score'], 4) for h in cli]
    assert all(h['caption'] for h in api['results']) and api['lang'] == 'vi'
    info = get_json(url + 'info')
    assert (info['images'], info['combiner'], info['max_k']) == (29, False, 100)
    with pytest.raises(urllib.error.HTTPError) as e: urllib.request.urlopen(url + 'thumb?' + urllib.parse.urlencode(dict(path='../../etc/passwd')))
    assert e.value.code == 404 and 'not an image of this index' in json.load(e.value)['error']

def test_page_in_a_browser(site, chromium):
    root, url, _ = site
    expected = run_json('search', 'idx', '--text', QUERY, '-k', '12', cwd=root)
    shots = screenshots()
    page = chromium.open(url)
    assert page.wait_for("document.querySelector('#about').textContent.includes('29 images')")
    page.type('#q', QUERY)
    page.press('Enter')
    page.wait_for("document.querySelectorAll('#results figure.result').length === 12")
    page.wait_for("[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)")
    shown = page.evaluate("[...document.querySelectorAll('#results figure.result')].map(f => f.dataset.path)")
    assert shown == by_name(root, expected)   # the CLI's ranking, in the page's order
    assert Path(shown[0]).name == Path(expected[0]['path']).name
    caption = page.evaluate("document.querySelector('#results figure.result .caption').textContent")
    assert caption == expected[0]['caption']
    assert 'results' in page.evaluate("document.querySelector('#status').textContent")
    page.screenshot(shots/'serve-text-query.png', full_page=False)
    # image -> image: the file dialog gets a photo of the gallery, which comes back first with a score of 1
    page.upload('#image', root/'gallery'/'photos'/'chelsea.jpg')
    page.wait_for("!document.querySelector('#reference').hidden")
    assert page.evaluate("document.querySelector('#q').disabled")  # no combiner: the text box is off, not ignored
    page.click('#go')
    page.wait_for("(document.querySelector('#results figure.result') || {dataset: {}}).dataset.path === 'chelsea.jpg'")   # named relative to the gallery's root
    assert page.evaluate("document.querySelector('#results .score').textContent") == '1.000'
    page.wait_for("[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)")
    page.screenshot(shots/'serve-image-query.png', full_page=False)
    assert page.errors == [], page.errors
    print(f'screenshots: {shots}')

def raw_request(url:str, data:bytes, timeout=10) -> bytes:
    "Send `data` as is to the server of `url` and read what comes back until it closes (or `timeout`)."
    host, port = urllib.parse.urlsplit(url).hostname, urllib.parse.urlsplit(url).port
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(data); chunks = []
        while (c := s.recv(65536)): chunks.append(c)
    return b''.join(chunks)

def status_of(answer:bytes) -> int: return int(answer.split(b' ', 2)[1])

def post(url:str, body:bytes, kind='image/jpeg', timeout=60):
    "POST `body` to /search: `(status, json, headers)`."
    req = urllib.request.Request(url + 'search?k=3', data=body, headers={'Content-Type': kind}, method='POST')
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r: return r.status, json.load(r), r.headers
    except urllib.error.HTTPError as e: return e.code, json.load(e), e.headers   # headers looked up by any case (Starlette sends them lower-case)

def png_of(width, height) -> bytes:
    import PIL.Image
    out = io.BytesIO(); PIL.Image.new('RGB', (width, height), (90, 140, 200)).save(out, 'PNG'); return out.getvalue()

@pytest.mark.slow
def test_hostile_uploads_and_hosts(site):
    root, url, proc = site
    photo = (root/'gallery'/'photos'/'chelsea.jpg').read_bytes()
    # a chunked upload (no Content-Length) of 200 MiB to a server taking 2 MiB: refused once 2 MiB are in, not read to its end
    def body():
        for _ in range(200 * 16): yield b'\xff' * 65536
    conn = http.client.HTTPConnection('127.0.0.1', urllib.parse.urlsplit(url).port, timeout=30)
    t0, sent = time.time(), 0
    try:
        conn.putrequest('POST', '/search'); conn.putheader('Content-Type', 'image/jpeg'); conn.putheader('Transfer-Encoding', 'chunked'); conn.endheaders()
        for chunk in body(): conn.send(b'%x\r\n%s\r\n' % (len(chunk), chunk)); sent += len(chunk)
    except OSError: pass                                                  # the server closed the connection: what we want
    answer = conn.getresponse(); status = answer.status; error = json.load(answer)['error']; conn.close()
    assert status == 413 and 'at most 2 MiB' in error and sent < 50 * 2**20 and time.time() - t0 < 20, (status, error, sent)
    assert (r := post(url, photo[:len(photo) // 2] + b'\xff\xd9'))[0] == 415 and 'premature end' in r[1]['error'], r   # a cut JPEG, end marker put back
    assert (r := post(url, png_of(8, 8)[:40], 'image/png'))[0] == 415, r
    assert (r := post(url, b'', 'image/png'))[0] == 400 and 'empty' in r[1]['error'], r
    assert (r := post(url, b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>', 'image/svg+xml'))[0] == 415, r
    bomb = png_of(8, 8)[:16] + (30000).to_bytes(4, 'big') * 2   # an 8x8 PNG whose header claims 30000x30000 (CRC left wrong)
    assert (r := post(url, bomb + png_of(8, 8)[24:], 'image/png'))[0] in (413, 415), r
    # other Host names (DNS rebinding), a 100 KB query string, non-UTF-8, k out of range, an unknown language
    assert status_of(raw_request(url, b'GET /info HTTP/1.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n')) == 400
    assert status_of(raw_request(url, b'GET /info HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n')) == 200
    assert status_of(raw_request(url, b'GET /search?q=' + b'x' * 100_000 + b' HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n')) in (400, 414)
    for query, message in [('q=caf%E9', 'not UTF-8'), ('q=m%C3%A8o&k=-1', 'k must be between'), ('q=m%C3%A8o&k=' + str(10**9), 'k must be between'),
                           ('q=m%C3%A8o&lang=fr', 'lang must be one of')]:
        with pytest.raises(urllib.error.HTTPError) as e: urllib.request.urlopen(url + 'search?' + query, timeout=30)
        assert e.value.code == 400 and message in json.load(e.value)['error'], query
    for docs in ('docs', 'openapi.json'):
        with pytest.raises(urllib.error.HTTPError) as e: urllib.request.urlopen(url + docs, timeout=30)
        assert e.value.code == 404
    assert len(get_json(url + 'search?' + urllib.parse.urlencode(dict(q=QUERY, k=3)))['results']) == 3   # still serving

@pytest.mark.slow
def test_slow_and_many_clients(site):
    "150 sockets holding half a header are closed within seconds (--header-timeout 2) and never delay a real query."
    root, url, proc = site
    port = urllib.parse.urlsplit(url).port
    sockets = []
    for _ in range(150):
        s = socket.create_connection(('127.0.0.1', port), timeout=10); s.sendall(b'GET /info HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: '); sockets.append(s)
    t0 = time.perf_counter()
    assert get_json(url + 'search?' + urllib.parse.urlencode(dict(q=QUERY, k=5)))['results']
    assert time.perf_counter() - t0 < 2
    def closed(s):
        try: return s.recv(1) == b''
        except ConnectionResetError: return True
        except socket.timeout: return False
    t0 = time.time()
    for s in sockets: s.settimeout(max(0.1, 6 - (time.time() - t0)))
    assert all(closed(s) for s in sockets) and time.time() - t0 < 6.5
    for s in sockets: s.close()

@pytest.mark.slow
def test_upload_storm_stays_within_the_decode_budget(site):
    "16 parallel 40-megapixel PNGs with --max-decoding 2: each gets 200 or 503 with Retry-After, the server's memory stays within 2 decodes."
    import psutil
    root, url, proc = site
    server = psutil.Process(proc.pid)
    big = png_of(6300, 6300)                                          # 39.7 megapixels, ~120 KB
    idle, peak, done = server.memory_info().rss, [0], threading.Event()
    def sample():
        while not done.is_set(): peak[0] = max(peak[0], server.memory_info().rss); time.sleep(0.01)
    threading.Thread(target=sample, daemon=True).start()
    with ThreadPoolExecutor(16) as pool: answers = list(pool.map(lambda _: post(url, big, 'image/png', timeout=120), range(16)))
    done.set()
    assert all(s == 200 or (s == 503 and h.get('Retry-After')) for s, _, h in answers), [(s, b) for s, b, _ in answers]
    assert sum(s == 200 for s, _, _ in answers) >= 2
    budget = 2 * 6300 * 6300 * 6                                      # --max-decoding 2, 6 bytes a pixel at the worst
    assert peak[0] - idle < budget + 150 * 2**20, f'{(peak[0] - idle) / 2**20:.0f} MiB above idle, budget {budget / 2**20:.0f} MiB'
    assert len(get_json(url + 'search?' + urllib.parse.urlencode(dict(q=QUERY, k=3)))['results']) == 3

@pytest.mark.slow
def test_exposed_server_needs_its_token_and_serves_a_growing_index(site):
    "--host 0.0.0.0 without a token makes one and prints the login link; images encoded into the served folder are found after the reload."
    root, _, _ = site
    shutil.copytree(root/'idx', root/'idx2')
    proc, url = start_serve(root, root, 'idx2', '--host', '0.0.0.0', '--reload-every', '0.5', name='exposed')
    try:
        t0 = time.time()
        while 'log in' not in (root/'exposed.out').read_text() and time.time() - t0 < 10: time.sleep(0.1)
        out = (root/'exposed.out').read_text()
        link = re.search(r'open (http://\S+\?token=(\S+)) to log in', out)
        assert link, out
        token = link.group(2)
        with pytest.raises(urllib.error.HTTPError) as e: urllib.request.urlopen(url + 'info', timeout=30)
        assert e.value.code == 401
        with pytest.raises(urllib.error.HTTPError) as e: urllib.request.urlopen(url + 'thumb?path=chelsea.jpg', timeout=30)
        assert e.value.code == 401                                      # thumbnails too
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        assert '<input id="q"' in opener.open(link.group(1).replace(urllib.parse.urlsplit(link.group(1)).netloc, urllib.parse.urlsplit(url).netloc)).read().decode()
        assert opener.open(url + 'thumb?path=chelsea.jpg').status == 200   # the cookie the login link set
        bearer = {'Authorization': f'Bearer {token}'}
        info = lambda: json.load(urllib.request.urlopen(urllib.request.Request(url + 'info', headers=bearer), timeout=30))
        assert info()['images'] == 29
        (root/'more').mkdir()
        import PIL.Image
        for i, colour in enumerate([(250, 20, 20), (20, 250, 20), (20, 20, 250)]):
            img = PIL.Image.new('RGB', (96, 64), colour); img.paste((255, 255, 255), (10 * i, 10, 10 * i + 20, 30)); img.save(root/'more'/f'new_{i}.jpg')
        r = phoalign('encode', 'model.pt', '--images', 'more', '--out', 'idx2', '--no-progress', cwd=root)
        assert r.returncode == 0, r.stderr
        t0 = time.time()
        while info()['images'] != 32 and time.time() - t0 < 15: time.sleep(0.2)
        assert info()['images'] == 32 and info()['reloads'] >= 1
        req = urllib.request.Request(url + 'search?k=1', data=(root/'more'/'new_1.jpg').read_bytes(), headers={**bearer, 'Content-Type': 'image/jpeg'}, method='POST')
        hit = json.load(urllib.request.urlopen(req, timeout=30))['results'][0]
        assert hit['path'] == 'more/new_1.jpg' and hit['score'] > 0.99, hit   # named relative to the gallery's root (now root/)
        forced = json.load(urllib.request.urlopen(urllib.request.Request(url + 'reload', headers=bearer, method='POST'), timeout=30))
        assert forced['reloaded'] is True and forced['images'] == 32
    finally:
        proc.terminate(); proc.wait(30)

@pytest.mark.slow
def test_ctrl_c_stops_it_cleanly(site):
    root, url, proc = site
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0
    out, err = (root/'serve.out').read_text(), (root/'serve.err').read_text()
    assert 'serving 29 images' in out and url in out, out
    assert 'Traceback' not in err, err

@pytest.mark.slow
def test_typos_and_a_port_in_use(site):
    root, _, _ = site
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0)); taken.listen(1)
        r = phoalign('serve', 'idx', '--port', taken.getsockname()[1], cwd=root)
    assert r.returncode == 2 and 'another program uses that port; pass --port' in r.stderr, r.stderr
    assert_refused([(['nope', '--port', '0'], 'nope: no such index folder'),
                    (['idx/captions', '--port', '0'], 'is a caption index'),
                    (['idx', '--port', '70000'], '--port must be between 0 and 65535'),
                    (['idx', '--port', '0', '--max-k', '0'], '--max-k) must be at least 1'),
                    (['idx', '--port', '0', '--share'], '--share works on Colab'),
                    (['idx', '--port', '0', '--max-batch', '0'], '--max-batch) must be at least 1'),
                    (['idx', '--port', '0', '--combiner', 'missing.pt'], 'missing.pt'),
                    (['idx', '--port', '0', '--rate', '-2'], '--rate'), (['idx', '--port', '0', '--max-concurrency', '0'], '--max-concurrency'),
                    (['idx', '--port', '0', '--header-timeout', '0'], '--header-timeout'), (['idx', '--port', '0', '--token', ' '], '--token is empty'),
                    (['idx', '--port', '0', '--max-decoding', '0'], '--max-decoding) must be at least 1')], root, 'serve')
    r = phoalign('serve', 'idx', '--prot', '8000', cwd=root)
    assert r.returncode == 2 and 'unrecognized arguments: --prot' in r.stderr
