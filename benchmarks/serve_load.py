"""`phoalign serve` under load, while its index grows, and under an upload storm: requests, errors, latencies, the
server's peak memory, and whether images added during the load are found after the server reloads its index.

    python benchmarks/serve_load.py                          # 64 clients for 60 s + 1,000 images added; then the storm
    python benchmarks/serve_load.py --clients 16 --seconds 20 --added 200 --storm-seconds 10   # a quick run

Phase 1 (issue 24): `--clients` threads, each with its own keep-alive connection to 127.0.0.1, send mixed queries for
`--seconds` seconds (4 in 5 `GET /search?q=<a caption>&k=10`, 1 in 5 `POST /search` with a gallery photo as the raw
body). Five seconds in, `phoalign encode` adds `--added` new images (drawn here, 160x120 JPEGs in `more/`) to the
served index folder. Counted: requests, errors (any answer but 200, or a failed connection: want 0), p50/p99 per
kind; after the load, every added image searched by its own file must come back first (image -> image) from the
running server, which was never restarted.

Phase 2 (issue 25): `--storm-clients` threads upload a 6300x6300 PNG (39.7 megapixels, ~120 KB on the wire) as fast as
they can for `--storm-seconds`, while `--storm-clients` others send text queries. An upload's answer is 200 or 503
with Retry-After (the decode slots are full), never anything else; text queries must all answer 200. Reported: the
server's peak RSS (sampled every 20 ms from /proc) above its idle RSS, beside the decode budget
(`--max-decoding` x 40 megapixels x 6 bytes), and the text p99 during the storm.

Everything runs on 127.0.0.1; the load is bounded in time and in clients. On 2 CPU cores the load generator, the
encoder and the server share the cores: the errors, the memory and the found images are the result; latencies are
for comparison on the same machine only.
"""
from __future__ import annotations
import argparse, http.client, io, json, os, shutil, socket, subprocess, sys, tempfile, threading, time, urllib.parse
from pathlib import Path
import numpy as np

repo = Path(__file__).resolve().parents[1]

def log(*a): print(f'[{time.strftime("%H:%M:%S")}]', *a, file=sys.stderr, flush=True)

def free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def phoalign(*args, cwd):
    out = subprocess.run([sys.executable, '-m', 'phoalign', *map(str, args)], cwd=cwd, capture_output=True, text=True)
    if out.returncode: sys.exit(f'phoalign {" ".join(map(str, args))} failed:\n{out.stderr[-3000:]}')
    return out.stdout

def rss(pid:int) -> int:
    "Resident bytes of a process, from /proc (no psutil call overhead in the sampling loop)."
    with open(f'/proc/{pid}/statm') as f: return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')

class PeakMemory:
    "Samples a process's RSS every 20 ms on a thread; `peak` since the last `reset`."
    def __init__(self, pid):
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
    def _run(self):
        while not self._stop.wait(0.02):
            try: self.peak = max(self.peak, rss(self.pid))
            except OSError: return
    def reset(self): self.peak = rss(self.pid)
    def stop(self): self._stop.set()

def request(conn, method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse(); data = r.read()
    return r.status, data, r.getheader('Retry-After')

def run_clients(port, n, seconds, job) -> dict:
    "`n` threads calling `job(conn, i, j)` -> (kind, status, seconds, retry_after) until `seconds` pass; the records."
    records, stop_at = [], time.time() + seconds
    lock = threading.Lock()
    def worker(i):
        conn, j = http.client.HTTPConnection('127.0.0.1', port, timeout=60), 0
        while time.time() < stop_at:
            try: rec = job(conn, i, j)
            except (OSError, http.client.HTTPException) as e:
                rec = ('connection', repr(e), 0.0, None)
                conn.close(); conn = http.client.HTTPConnection('127.0.0.1', port, timeout=60)
            with lock: records.append(rec)
            j += 1
        conn.close()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads: t.start()
    for t in threads: t.join()
    return records

def summary(records, kind, ok=(200,)):
    mine = [r for r in records if r[0] == kind]
    lat = np.array([r[2] for r in mine if r[1] == 200]) * 1000
    errors = [r for r in mine if r[1] not in ok]
    return dict(requests=len(mine), ok=int((np.array([r[1] for r in mine]) == 200).sum()) if mine else 0, errors=len(errors),
                refused=sum(1 for r in mine if r[1] == 503), p50=np.percentile(lat, 50) if len(lat) else float('nan'),
                p99=np.percentile(lat, 99) if len(lat) else float('nan'), first_error=errors[0][1] if errors else None)

def table(head, rows):
    rows = [tuple(str(x) for x in r) for r in rows]
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    for r in [head, tuple('-' * w for w in widths), *rows]: print(' | '.join(x.ljust(w) for x, w in zip(r, widths)))

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--clients', type=int, default=64)
    p.add_argument('--seconds', type=float, default=60)
    p.add_argument('--added', type=int, default=1000, help='images encode adds to the served index during the load')
    p.add_argument('--storm-clients', type=int, default=16)
    p.add_argument('--storm-seconds', type=float, default=30)
    p.add_argument('--max-decoding', type=int, default=2, help="the server's --max-decoding for the storm")
    p.add_argument('--workdir', default=None)
    a = p.parse_args()
    import cv2
    from PIL import Image
    from phoalign.data.formats import read_pairs
    from phoalign.model import save_model
    from phoalign.testing import tiny_search_model
    gallery = repo/'images'
    queries = [c for lang in ('vi', 'en') for c in read_pairs(gallery/f'captions_{lang}.json').caption]
    photos = sorted((gallery/'photos').glob('*.jpg'))
    work = Path(tempfile.mkdtemp(prefix='phoalign-serve-load-', dir=a.workdir))
    proc = None
    try:
        log(f'gallery, model and {a.added} new images in {work}')
        shutil.copytree(gallery, work/'gallery')
        save_model(tiny_search_model(queries, photos), work/'model.pt')
        phoalign('encode', 'model.pt', '--images', 'gallery/captions_vi.json', '--out', 'idx', '--no-progress', cwd=work)
        rng = np.random.default_rng(0)
        (work/'more').mkdir()
        for i in range(a.added):   # distinct images: a colour field with a few random blocks
            img = np.full((120, 160, 3), rng.integers(0, 256, 3), np.uint8)
            for _ in range(6):
                y, x = rng.integers(0, 100), rng.integers(0, 140)
                img[y:y + 20, x:x + 20] = rng.integers(0, 256, 3)
            cv2.imwrite(str(work/'more'/f'added_{i:05d}.jpg'), img)
        port = free_port()
        proc = subprocess.Popen([sys.executable, '-m', 'phoalign', 'serve', 'idx', '--port', str(port), '--rate', '0',
                                 '--max-concurrency', str(4 * max(a.clients, 2 * a.storm_clients)), '--max-decoding', str(a.max_decoding),
                                 '--reload-every', '1', '--log-level', 'critical'],
                                cwd=work, stdout=subprocess.DEVNULL, stderr=open(work/'serve.err', 'w'), text=True)
        t0 = time.time()
        while True:
            try:
                c = http.client.HTTPConnection('127.0.0.1', port, timeout=5); info = json.loads(request(c, 'GET', '/info')[1]); c.close(); break
            except OSError:
                if proc.poll() is not None: sys.exit(f'phoalign serve failed: {(work/"serve.err").read_text()}')
                if time.time() - t0 > 300: sys.exit('phoalign serve did not start in 300 s')
                time.sleep(0.2)
        memory = PeakMemory(proc.pid)
        photo_bytes = [p.read_bytes() for p in photos]

        # phase 1: mixed load while encode adds images
        def mixed(conn, i, j):
            t = time.perf_counter()
            if (i + j) % 5 == 4:
                status, _, retry = request(conn, 'POST', '/search?k=10', photo_bytes[(i + j) % len(photo_bytes)], {'Content-Type': 'image/jpeg'})
                return ('image', status, time.perf_counter() - t, retry)
            status, _, retry = request(conn, 'GET', '/search?' + urllib.parse.urlencode(dict(q=queries[(i * 7 + j) % len(queries)], k=10)))
            return ('text', status, time.perf_counter() - t, retry)
        encode_result = {}
        def add_images():
            time.sleep(min(5, a.seconds / 4))
            t = time.time()
            out = subprocess.run([sys.executable, '-m', 'phoalign', 'encode', 'model.pt', '--images', 'more', '--out', 'idx', '--no-progress', '--json'],
                                 cwd=work, capture_output=True, text=True)
            encode_result.update(code=out.returncode, seconds=time.time() - t, err=out.stderr[-2000:])
        adder = threading.Thread(target=add_images); adder.start()
        log(f'phase 1: {a.clients} clients for {a.seconds:.0f} s; encode adds {a.added} images meanwhile')
        records = run_clients(port, a.clients, a.seconds, mixed)
        adder.join()
        if encode_result['code']: sys.exit(f'phoalign encode failed during the load:\n{encode_result["err"]}')
        t0 = time.time()
        c = http.client.HTTPConnection('127.0.0.1', port, timeout=30)
        while json.loads(request(c, 'GET', '/info')[1])['images'] != len(photos) + a.added and time.time() - t0 < 60: time.sleep(0.2)
        reload_wait = time.time() - t0
        info = json.loads(request(c, 'GET', '/info')[1])
        found = 0
        added = sorted((work/'more').glob('*.jpg'))
        for f in added:
            status, body, _ = request(c, 'POST', '/search?k=1', f.read_bytes(), {'Content-Type': 'image/jpeg'})
            found += status == 200 and json.loads(body)['results'][0]['path'].endswith('more/' + f.name)
        c.close()
        peak_phase1 = memory.peak

        # phase 2: the upload storm
        big = io.BytesIO(); Image.new('RGB', (6300, 6300), (90, 140, 200)).save(big, 'PNG'); big = big.getvalue()
        time.sleep(1); memory.reset(); idle = memory.peak
        def storm(conn, i, j):
            t = time.perf_counter()
            if i < a.storm_clients:
                status, _, retry = request(conn, 'POST', '/search?k=5', big, {'Content-Type': 'image/png'})
                if status == 503 and not retry: status = 'no Retry-After'
                return ('upload', status, time.perf_counter() - t, retry)
            status, _, retry = request(conn, 'GET', '/search?' + urllib.parse.urlencode(dict(q=queries[(i * 7 + j) % len(queries)], k=10)))
            return ('text', status, time.perf_counter() - t, retry)
        log(f'phase 2: {a.storm_clients} clients uploading {len(big) / 1e3:.0f} KB 6300x6300 PNGs and {a.storm_clients} sending text for {a.storm_seconds:.0f} s')
        storm_records = run_clients(port, 2 * a.storm_clients, a.storm_seconds, storm)
        peak_storm = memory.peak
        memory.stop()
        alive = proc.poll() is None

        cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
        print(f'\nphoalign serve on 127.0.0.1, tiny model, {cores} CPU cores, {info["images"]} images at the end\n')
        print(f'Phase 1: {a.clients} clients, {a.seconds:.0f} s, encode adding {a.added} images ({encode_result["seconds"]:.1f} s) to the served index')
        rows = []
        for kind in ('text', 'image', 'connection'):
            s = summary(records, kind)
            if s['requests'] or kind != 'connection':
                rows.append((kind, s['requests'], s['errors'], f'{s["p50"]:.1f}', f'{s["p99"]:.1f}', s['first_error'] or ''))
        table(('queries', 'requests', 'errors', 'p50 ms', 'p99 ms', 'first error'), rows)
        print(f'added images found first by their own file after the reload: {found} / {len(added)} '
              f'(reloaded {reload_wait:.1f} s after encode ended; reloads {info.get("reloads")})')
        print(f'server peak RSS in phase 1: {peak_phase1 / 2**20:.0f} MiB')
        print(f'\nPhase 2: {a.storm_clients} clients uploading 39.7-megapixel PNGs, {a.storm_clients} sending text, {a.storm_seconds:.0f} s, --max-decoding {a.max_decoding}')
        up, tx = summary(storm_records, 'upload', ok=(200, 503)), summary(storm_records, 'text')
        conn_errors = summary(storm_records, 'connection')['requests']
        table(('queries', 'requests', '200', '503 (Retry-After)', 'errors', 'p50 ms', 'p99 ms', 'first error'),
              [('upload', up['requests'], up['ok'], up['refused'], up['errors'], f'{up["p50"]:.0f}', f'{up["p99"]:.0f}', up['first_error'] or ''),
               ('text', tx['requests'], tx['ok'], tx['refused'], tx['errors'], f'{tx["p50"]:.1f}', f'{tx["p99"]:.1f}', tx['first_error'] or '')])
        budget = a.max_decoding * 40_000_000 * 6
        print(f'connection errors: {conn_errors}; server alive after the storm: {alive}')
        print(f'server RSS: idle {idle / 2**20:.0f} MiB, peak {peak_storm / 2**20:.0f} MiB: +{(peak_storm - idle) / 2**20:.0f} MiB '
              f'(decode budget {a.max_decoding} x 40 MP x 6 B = {budget / 2**20:.0f} MiB)')
    finally:
        if proc is not None and proc.poll() is None: proc.terminate(); proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)

if __name__ == '__main__': main()
