"""Headless Chromium driven over the DevTools protocol: the browser checks of the tests and of `.ci/docs.py`.

A test helper, not part of phoalign: it needs Debian's `chromium` (or Chrome) and `websocket-client`, and nothing that
downloads a browser. `Chromium().open(url)` loads a page and records what a person would notice: console errors,
uncaught exceptions and requests that failed (a missing image, a 404 script)."""
from __future__ import annotations
import itertools, json, os, re, shutil, subprocess, tempfile, time, base64, urllib.request
from pathlib import Path

CANDIDATES = ('chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable', 'chrome')

def find_chromium() -> str|None:
    "The Chromium or Chrome executable: `$CHROMIUM`, else the first of `CANDIDATES` on the PATH, else None."
    if os.environ.get('CHROMIUM'): return os.environ['CHROMIUM']
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)

def browser_required() -> bool:
    "CI sets `PHOALIGN_REQUIRE_BROWSER=1`: a missing browser then fails the browser tests instead of skipping them."
    return os.environ.get('PHOALIGN_REQUIRE_BROWSER', '') not in ('', '0')

class BrowserError(RuntimeError): pass

class Chromium:
    "One headless Chromium with one page; `errors` lists what went wrong on the pages opened since the last `open`."
    def __init__(self, width:int=1280, height:int=900, timeout:float=30):
        import websocket   # websocket-client
        exe = find_chromium()
        if exe is None: raise BrowserError(f'no Chromium found (tried $CHROMIUM and {", ".join(CANDIDATES)}): apt-get install chromium')
        self.profile = tempfile.mkdtemp(prefix='phoalign-chromium-')
        self.proc = subprocess.Popen([exe, '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
                                      '--no-first-run', '--no-default-browser-check', '--disable-extensions',
                                      '--remote-debugging-port=0', f'--user-data-dir={self.profile}',
                                      f'--window-size={width},{height}', 'about:blank'],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        port, lines, t0 = None, [], time.time()
        while port is None and time.time() - t0 < timeout:   # Chromium names its port on stderr
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None: break
            lines.append(line)
            if (m := re.search(r'DevTools listening on ws://[^:]+:(\d+)/', line)): port = int(m.group(1))
        if port is None:
            self.close()
            raise BrowserError(f'Chromium did not start: {"".join(lines[-5:]).strip()}')
        threading_drain(self.proc.stderr)
        pages = [t for t in json.load(urllib.request.urlopen(f'http://127.0.0.1:{port}/json/list')) if t['type'] == 'page']
        self.ws = websocket.create_connection(pages[0]['webSocketDebuggerUrl'], timeout=timeout, suppress_origin=True)
        self.timeout, self._ids, self.errors, self._events, self._urls = timeout, itertools.count(1), [], [], {}
        for domain in ('Page', 'Runtime', 'Log', 'Network'): self.send(f'{domain}.enable')
        self.send('Emulation.setDeviceMetricsOverride', width=width, height=height, deviceScaleFactor=1, mobile=False)

    def __enter__(self): return self
    def __exit__(self, *exc): self.close()

    def close(self):
        "Quit the browser and remove its profile folder."
        if getattr(self, 'ws', None) is not None:
            try: self.ws.close()
            except Exception: pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try: self.proc.wait(10)
            except subprocess.TimeoutExpired: self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)

    def _record(self, msg:dict):
        "Keep the events a person would see as something broken."
        method, p = msg.get('method'), msg.get('params', {})
        if method == 'Runtime.exceptionThrown':
            d = p['exceptionDetails']
            self.errors.append(f"uncaught exception: {d.get('exception', {}).get('description') or d.get('text')}")
        elif method == 'Runtime.consoleAPICalled' and p['type'] in ('error', 'assert'):
            self.errors.append('console.error: ' + ' '.join(str(a.get('value', a.get('description', ''))) for a in p['args']))
        elif method == 'Log.entryAdded' and p['entry']['level'] == 'error':
            e = p['entry']; self.errors.append(f"{e['source']} error: {e['text']}" + (f" ({e['url']})" if e.get('url') else ''))
        elif method == 'Network.loadingFailed' and not p.get('canceled'):
            self.errors.append(f"request failed: {p.get('errorText')} ({self._urls.get(p['requestId'], '?')})")
        elif method == 'Network.requestWillBeSent': self._urls[p['requestId']] = p['request']['url']
        elif method == 'Network.responseReceived' and p['response']['status'] >= 400:
            self.errors.append(f"HTTP {p['response']['status']}: {p['response']['url']}")
        self._events.append(msg)

    def _next(self, deadline:float) -> dict:
        self.ws.settimeout(max(0.05, deadline - time.time()))
        msg = json.loads(self.ws.recv())
        if 'method' in msg: self._record(msg)
        return msg

    def send(self, method:str, **params) -> dict:
        "Call a DevTools method and return its result (events arriving meanwhile are recorded)."
        i, deadline = next(self._ids), time.time() + self.timeout
        self.ws.send(json.dumps(dict(id=i, method=method, params=params)))
        while True:
            msg = self._next(deadline)
            if msg.get('id') == i:
                if 'error' in msg: raise BrowserError(f"{method}: {msg['error'].get('message')}")
                return msg.get('result', {})

    def open(self, url:str, settle:float=0.3) -> 'Chromium':
        "Load `url` and wait for its load event (and `settle` seconds for late requests); clears `errors`."
        self.errors, self._events, self._urls = [], [], {}
        self.send('Page.navigate', url=url)
        deadline = time.time() + self.timeout
        while not any(e.get('method') == 'Page.loadEventFired' for e in self._events):
            if time.time() > deadline: raise BrowserError(f'{url} did not finish loading in {self.timeout:.0f}s')
            self._next(deadline)
        self.pump(settle)
        return self

    def pump(self, seconds:float):
        "Record the events of the next `seconds`."
        end = time.time() + seconds
        while time.time() < end:
            try: self._next(end)
            except Exception as e:
                if type(e).__name__ != 'WebSocketTimeoutException': raise

    def evaluate(self, expression:str):
        "The value of a JavaScript expression on the page (promises awaited)."
        r = self.send('Runtime.evaluate', expression=expression, returnByValue=True, awaitPromise=True)
        if 'exceptionDetails' in r: raise BrowserError(f"{expression[:80]}: {r['exceptionDetails'].get('exception', {}).get('description')}")
        return r['result'].get('value')

    def wait_for(self, expression:str, timeout:float|None=None):
        "Poll a JavaScript expression until it is truthy; returns its value."
        deadline = time.time() + (timeout or self.timeout)
        while True:
            value = self.evaluate(expression)
            if value: return value
            if time.time() > deadline: raise BrowserError(f'timed out waiting for: {expression}')
            self.pump(0.1)

    def type(self, selector:str, text:str):
        "Focus the element `selector` and type `text` into it, as a keyboard would (Vietnamese letters too)."
        if not self.evaluate(f'(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return false; e.focus(); return true; }})()'):
            raise BrowserError(f'no element {selector} on the page')
        self.send('Input.insertText', text=text)

    def press(self, key:str='Enter'):
        "Press and release a key on the focused element."
        codes = dict(Enter=13, Tab=9, Escape=27)
        for kind in ('keyDown', 'keyUp'):
            self.send('Input.dispatchKeyEvent', type=kind, key=key, code=key, windowsVirtualKeyCode=codes.get(key, 0),
                      **({'text': '\r'} if key == 'Enter' and kind == 'keyDown' else {}))

    def click(self, selector:str):
        "Click the centre of the element `selector` with the mouse."
        box = self.evaluate(f'(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null; e.scrollIntoView(); '
                            'const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()')
        if box is None: raise BrowserError(f'no element {selector} on the page')
        for kind in ('mousePressed', 'mouseReleased'):
            self.send('Input.dispatchMouseEvent', type=kind, x=box[0], y=box[1], button='left', clickCount=1)

    def upload(self, selector:str, *files:str|Path):
        "Choose `files` in the file input `selector`, as the file dialog would."
        doc = self.send('DOM.getDocument')
        node = self.send('DOM.querySelector', nodeId=doc['root']['nodeId'], selector=selector)['nodeId']
        if not node: raise BrowserError(f'no element {selector} on the page')
        self.send('DOM.setFileInputFiles', nodeId=node, files=[str(Path(f).resolve()) for f in files])

    def screenshot(self, path:str|Path, full_page:bool=True) -> Path:
        "Save a PNG of the page (the whole page when `full_page`)."
        opts = dict(format='png', captureBeyondViewport=full_page)
        if full_page:
            w, h = self.evaluate('[document.documentElement.scrollWidth, document.documentElement.scrollHeight]')
            opts['clip'] = dict(x=0, y=0, width=w, height=min(h, 8000), scale=1)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(base64.b64decode(self.send('Page.captureScreenshot', **opts)['data']))
        return Path(path)

def threading_drain(stream):
    "Read a pipe to its end on a thread, so a chatty browser never blocks on a full stderr pipe."
    import threading
    threading.Thread(target=lambda: [None for _ in stream], daemon=True).start()
