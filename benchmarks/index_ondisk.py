"""An index larger than its memory budget: N vectors built under `--max-memory` into IVF-PQ with its inverted lists on disk
(trained on a sample, filled part by part, merged into FAISS's on-disk lists), then loaded and searched in a fresh process.

    python benchmarks/index_ondisk.py [--n 500000 --dim 256 --max-memory 256MiB] [--work DIR]

The vectors are written to a `.npy` file first (by chunks); the build runs in a fresh interpreter that reads that file
(with reads into one buffer, not through a mapping) by chunks of a quarter of the budget (the first holds the training
sample) and saves after each (what `phoalign encode` does to a gallery that grows: the floats are appended, the new rows'
lists merged with the old), then tunes the index on queries and saves it. The queries are cross-modal-like: noisy copies of
vectors that are NOT in the index (held out of the file), half for tuning and half for the recall@10 reported against an
exact search. Peak RSS is `ru_maxrss` of each fresh process (it counts the pages of memory-mapped files it touched), and
the baseline is its RSS after the imports (Python, torch, FAISS, pandas): the budget bounds the growth over it. A thread
samples the RSS every 5 ms to say which phase (training, saves, tuning) reached how much. Latency is one query at a time
(median and 95th percentile) and a batch of 256.
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np

HERE = Path(__file__).resolve().parents[1]

BUILD = '''
import json, os, resource, sys, threading, time, numpy as np
def rss(): return int(open('/proc/self/statm').read().split()[1]) * 4096
def peak(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
def status(key): return next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith(key + ':'))
import faiss, pandas, pyarrow.parquet
from phoalign.index import EmbeddingIndex, ondisk_factory, parse_size, _training_rows
start = rss()
phase, phases = ['train'], {}
def sample():                                               # the highest RSS seen in each phase
    while True:
        r = rss(); phases[phase[0]] = max(phases.get(phase[0], 0), r); time.sleep(0.005)
threading.Thread(target=sample, daemon=True).start()
work, budget = sys.argv[1], parse_size(sys.argv[2], '--max-memory')
x = np.load(f'{work}/vectors.npy', mmap_mode='r'); header, (n, dim) = x.offset, x.shape; del x   # nothing read through it
ix = EmbeddingIndex(dim, 'ivfpq', ondisk_factory(n, dim), ondisk=True, max_memory=budget, use_gpu=False)
nlist = int(ix.factory.split(',')[0][3:])
first, step = _training_rows(ix, nlist), budget // 4 // (dim * 4)    # the first chunk is the training sample; then a quarter of the budget
buf = np.empty((max(first, step), dim), np.float32)
t0 = time.perf_counter(); saves = 0
with open(f'{work}/vectors.npy', 'rb', buffering=0) as f:
    s = 0
    while s < n:
        m = min(first if s == 0 else step, n - s)
        view = memoryview(buf[:m]).cast('B'); got = 0
        while got < len(view): got += os.preadv(f.fileno(), [view[got:]], header + s * dim * 4 + got)
        ix.add(buf[:m], np.arange(s, s + m), dict(n=np.arange(s, s + m)))
        phase[0] = 'saves'; ix.save(f'{work}/idx'); saves += 1; s += m; phase[0] = 'adds'
del buf
built = time.perf_counter() - t0; built_peak = peak()
q = np.load(f'{work}/queries.npy')
phase[0] = 'tune'; tuned = ix.tune(0.95, queries=q[:len(q) // 2], what='noisy held-out vectors'); ix.save(f'{work}/idx')
print(json.dumps(dict(factory=ix.factory, build=built, tune=time.perf_counter() - t0 - built, saves=saves, tuned=tuned, first=first, step=step, budget=budget, hwm=status('VmHWM'),
                      start=start, built_peak=built_peak, peak=peak(), phases=phases, anon=status('RssAnon'), file=status('RssFile'))))
'''

SEARCH = '''
import json, resource, sys, time, numpy as np
def rss(): return int(open('/proc/self/statm').read().split()[1]) * 4096
import faiss, pandas, pyarrow.parquet
from phoalign.index import EmbeddingIndex
work = sys.argv[1]
def hwm(): return next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmHWM:'))
start = rss(); t0 = time.perf_counter()
ix = EmbeddingIndex.load(f'{work}/idx', use_gpu=False); load = time.perf_counter() - t0; loaded = rss(); loaded_peak = hwm()
q = np.load(f'{work}/queries.npy'); q = q[len(q) // 2:]
exact = np.load(f'{work}/exact.npy')[len(np.load(f'{work}/exact.npy')) - len(q):]
rows = ix.search_rows(q, 10)[1]
recall = float(np.mean([len(set(a) & set(e)) / 10 for a, e in zip(rows, exact)]))
lat = []
for v in q[:200]:
    t = time.perf_counter(); ix.search_rows(v, 10); lat.append(time.perf_counter() - t)
t = time.perf_counter(); ix.search_rows(q[:256], 10); batch = time.perf_counter() - t
print(json.dumps(dict(load=load, start=start, loaded=loaded, loaded_peak=loaded_peak, recall=recall, top1=float((rows[:, 0] == exact[:, 0]).mean()),
                      p50=float(np.median(lat)), p95=float(np.percentile(lat, 95)), batch=batch,
                      peak=hwm(), maxrss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)))
'''

def run(code:str, *args) -> dict:
    env = {**os.environ, 'PYTHONPATH': str(HERE), 'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', '1')}
    out = subprocess.run([sys.executable, '-c', code, *map(str, args)], capture_output=True, text=True, env=env)
    if out.returncode: raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])

def make_vectors(work:Path, n:int, dim:int, queries:int, spread:float=1.0, chunk:int=65_536, reuse:bool=False):
    "`vectors.npy` (n rows), `queries.npy` (noisy copies of `queries` other rows, not stored) and `exact.npy` (their exact top 10)."
    import faiss
    if reuse and all((work/f).exists() for f in ('vectors.npy', 'queries.npy', 'exact.npy')):
        if np.load(work/'vectors.npy', mmap_mode='r').shape == (n, dim) and len(np.load(work/'queries.npy')) == queries: return
        raise SystemExit(f'--reuse: {work} holds other vectors than --n {n} --dim {dim} --queries {queries}')
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((4096, dim)).astype(np.float32)        # clustered, as embeddings are
    def draw(m):
        v = centres[rng.integers(0, len(centres), m)] + spread * rng.standard_normal((m, dim)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)
    with open(work/'vectors.npy', 'wb') as f:          # written, not mapped: this process stays small (a child's ru_maxrss counts its parent's peak)
        np.lib.format.write_array_header_1_0(f, dict(descr='<f4', fortran_order=False, shape=(n, dim)))
        header = f.tell()
        for s in range(0, n, chunk): f.write(draw(min(chunk, n - s)).tobytes())
    held = draw(queries)
    q = held + 0.8 * rng.standard_normal(held.shape).astype(np.float32) / np.sqrt(dim)   # a caption is near its image (cosine ~0.8), not on it
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    np.save(work/'queries.npy', q)
    scores, rows = np.full((queries, 10), -np.inf, np.float32), np.zeros((queries, 10), np.int64)
    block = np.empty((chunk, dim), np.float32)
    with open(work/'vectors.npy', 'rb') as f:
      f.seek(header)
      for s in range(0, n, chunk):
        b = block[:min(chunk, n - s)]; f.readinto(memoryview(b).cast('B'))
        bs, br = faiss.knn(q, b, 10, metric=faiss.METRIC_INNER_PRODUCT)
        scores, rows = np.concatenate([scores, bs], 1), np.concatenate([rows, br + s], 1)
        best = np.argsort(-scores, axis=1)[:, :10]
        scores, rows = np.take_along_axis(scores, best, 1), np.take_along_axis(rows, best, 1)
    np.save(work/'exact.npy', rows)

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=500_000, help='vectors in the index')
    ap.add_argument('--dim', type=int, default=256, help='their dimension')
    ap.add_argument('--max-memory', default='256MiB', help="the budget (below the vectors' size, so the lists go to disk)")
    ap.add_argument('--spread', type=float, default=1.0, help='noise around the 4096 cluster centres (per dimension, centres ~N(0, 1)): higher is harder for IVF')
    ap.add_argument('--queries', type=int, default=2000, help='held-out queries: half tune the index, half measure it')
    ap.add_argument('--work', default=None, help='a folder for the files (default: a temporary one; needs about 2 × N × dim × 4 bytes)')
    ap.add_argument('--reuse', action='store_true', help="reuse the vectors, queries and exact answers a previous run left in --work")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix='index-ondisk-')); work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work/'idx', ignore_errors=True)
    try:
        t = time.perf_counter(); make_vectors(work, args.n, args.dim, args.queries, args.spread, reuse=args.reuse)
        print(f'N={args.n:,} vectors of {args.dim} dims, spread {args.spread} ({args.n * args.dim * 4 / 2**20:.0f} MiB), --max-memory {args.max_memory}; '
              f'vectors and exact answers made in {time.perf_counter() - t:.0f}s', flush=True)
        b = run(BUILD, work, args.max_memory); s = run(SEARCH, work)
        files = {p.name: p.stat().st_size for p in (work/'idx').iterdir() if p.is_file()}
        lists = next(v for k, v in files.items() if k.startswith('lists-'))
        budget = b['budget']
        print(f'\nbuild process: RSS after imports (baseline) {b["start"] / 2**20:.0f} MiB; peak (ru_maxrss) after the build {b["built_peak"] / 2**20:.0f} MiB '
              f'(+{(b["built_peak"] - b["start"]) / 2**20:.0f}), after tuning {b["peak"] / 2**20:.0f} MiB (+{(b["peak"] - b["start"]) / 2**20:.0f} over the baseline: '
              f'{"within" if b["peak"] - b["start"] <= budget else "OVER"} --max-memory {args.max_memory}); VmHWM (this image only) {b["hwm"] / 2**20:.0f} MiB; '
              f'at the end RssAnon {b["anon"] / 2**20:.0f} MiB, RssFile (mapped pages) {b["file"] / 2**20:.0f} MiB')
        print('highest sampled RSS over the baseline by phase: ' + ', '.join(f'{k} +{(v - b["start"]) / 2**20:.0f} MiB' for k, v in b['phases'].items()) +
              f' (training sample {b["first"]:,} rows, then {b["step"]:,} rows a chunk)')
        print(f'search process: baseline {s["start"] / 2**20:.0f} MiB, after the load +{(s["loaded"] - s["start"]) / 2**20:.0f} MiB (peak +{(s["loaded_peak"] - s["start"]) / 2**20:.0f}), '
              f'peak after the searches +{(s["peak"] - s["start"]) / 2**20:.0f} MiB')
        print(f'\n| index | build s ({b["saves"]} saves) | tune s | build peak RSS MiB | lists MiB | load s | RSS after load MiB (+ over start) | '
              f'recall@10 | top-1 = exact | latency p50 / p95 ms | 256-query batch ms | search peak RSS MiB |\n|' + '---|' * 12)
        print(f'| {b["factory"]} on disk, nprobe {b["tuned"]["nprobe"]}, k_factor {b["tuned"]["k_factor"]} | {b["build"]:.0f} | {b["tune"]:.0f} | '
              f'{b["peak"] / 2**20:.0f} | {lists / 2**20:.0f} | {s["load"]:.2f} | {s["loaded"] / 2**20:.0f} (+{(s["loaded"] - s["start"]) / 2**20:.0f}) | '
              f'{s["recall"]:.3f} | {s["top1"]:.3f} | {s["p50"] * 1e3:.1f} / {s["p95"] * 1e3:.1f} | {s["batch"] * 1e3:.0f} | {s["peak"] / 2**20:.0f} |')
        print(f'\n(tuned on {b["tuned"]["queries"]}: recall {b["tuned"]["recall"]}; files: ' +
              ', '.join(f'{k} {v / 2**20:.1f} MiB' for k, v in sorted(files.items())) + ')')
    finally:
        if not args.work: shutil.rmtree(work, ignore_errors=True)

if __name__ == '__main__': main()
