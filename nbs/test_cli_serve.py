"""`phoalign serve` as a user runs it: a fresh folder, relative paths, the bundled photos, and a real (headless) browser
that types a Vietnamese query into the page and uploads a photo; then typos, a port in use and Ctrl-C."""
import json, os, shutil, signal, socket, subprocess, tempfile, time, urllib.parse, urllib.request
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

@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "A gallery encoded from a fresh folder, served by `phoalign serve ../idx` started from another folder."
    root = gallery_and_model(tmp_path_factory.mktemp('serve'))
    run_json('encode', 'model.pt', '--images', 'gallery/captions_vi.json', '--out', 'idx', '--no-progress', cwd=root)
    (root/'elsewhere').mkdir()
    port = free_port()
    # its output goes to files, not pipes: a pipe nobody reads fills up with the request log and blocks the server
    proc = subprocess.Popen([shutil.which('phoalign'), 'serve', '../idx', '--port', str(port)], cwd=root/'elsewhere',
                            stdout=open(root/'serve.out', 'w'), stderr=open(root/'serve.err', 'w'), text=True, env={**os.environ, 'HF_HUB_OFFLINE': '1'},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))   # Ctrl-C as a terminal gives it, whatever the worker ignores
    url, t0 = f'http://127.0.0.1:{port}/', time.time()
    while True:
        try: get_json(url + 'info'); break
        except OSError:
            if proc.poll() is not None: pytest.fail(f'phoalign serve exited with {proc.returncode}: {(root/"serve.err").read_text()}')
            if time.time() - t0 > 120: proc.kill(); pytest.fail('phoalign serve did not answer in 120 s')
            time.sleep(0.2)
    yield root, url, proc
    if proc.poll() is None: proc.kill(); proc.wait(10)

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
    assert [h['path'] for h in api['results']] == [str((root/h['path']).resolve()) for h in cli]   # the CLI shows them relative to where it runs
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
    assert shown == [str((root/h['path']).resolve()) for h in expected]   # the CLI's ranking, in the page's order
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
    page.wait_for("(document.querySelector('#results figure.result') || {dataset: {}}).dataset.path?.endsWith('/chelsea.jpg')")
    assert page.evaluate("document.querySelector('#results .score').textContent") == '1.000'
    page.wait_for("[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)")
    page.screenshot(shots/'serve-image-query.png', full_page=False)
    assert page.errors == [], page.errors
    print(f'screenshots: {shots}')

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
                    (['idx', '--port', '0', '--combiner', 'missing.pt'], 'missing.pt')], root, 'serve')
    r = phoalign('serve', 'idx', '--prot', '8000', cwd=root)
    assert r.returncode == 2 and 'unrecognized arguments: --prot' in r.stderr
