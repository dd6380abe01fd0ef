"""Peak memory and time of adding N vectors to a saved index of M: load it, add, save (what `phoalign encode` does to a
gallery that grew), for a flat and an IVF index.

    python benchmarks/index_add.py [--m 1000000 --n 10000 --dim 256] [--kinds flat,ivf] [--before /path/to/an/older/checkout]

The index of M random unit vectors is built once per kind (by this checkout) in `--work`; each case then runs in a fresh
interpreter on its own copy of that folder, so its peak RSS (`ru_maxrss`, which counts the pages of memory-mapped files it
touched too) is its own. The table gives the peak, the peak above the interpreter's size before loading (also as a
multiple of the vectors' own size, M × dim × 4 bytes), the time of each step, and the bytes the save wrote (`wchar` of
/proc/self/io). With `--before`, each case also runs against that checkout (put first on PYTHONPATH), alternating with
this one.
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

BUILD = '''
import sys, numpy as np
from phoalign.index import EmbeddingIndex
folder, kind, m, dim = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(0)
x = rng.standard_normal((m, dim), dtype=np.float32); x /= np.linalg.norm(x, axis=1, keepdims=True)
ix = EmbeddingIndex(dim, kind, use_gpu=False).add(x, [f'v{i}' for i in range(m)], dict(n=np.arange(m)))
del x
if kind != 'flat': ix.tune(0.9, n=500)
ix.save(folder)
'''

CASE = '''
import json, resource, sys, time, numpy as np
def rss(): return int(open('/proc/self/statm').read().split()[1]) * 4096
def written(): return next(int(l.split()[1]) for l in open('/proc/self/io') if l.startswith('wchar'))
from phoalign.index import EmbeddingIndex
import faiss, pandas, pyarrow.parquet   # imported before the start is measured: the load imports them
folder, n, dim = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
x = np.random.default_rng(1).standard_normal((n, dim), dtype=np.float32); x /= np.linalg.norm(x, axis=1, keepdims=True)
start, t0 = rss(), time.perf_counter()
ix = EmbeddingIndex.load(folder, use_gpu=False); t1 = time.perf_counter()
m = len(ix)
ix.add(x, [f'new{i}' for i in range(n)], dict(n=np.arange(m, m + n))); t2 = time.perf_counter()
w = written(); ix.save(folder); t3 = time.perf_counter(); w = written() - w
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
del ix; back = EmbeddingIndex.load(folder, use_gpu=False)   # the save holds: all rows back
assert len(back) == m + n and back.ids[-1] == f'new{n - 1}'
print(json.dumps(dict(start=start, peak=peak, load=t1 - t0, add=t2 - t1,
                      save=t3 - t2, written=w)))
'''

def run(code:str, root:Path, *args) -> str:
    env = {**os.environ, 'PYTHONPATH': str(root), 'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', '1')}
    out = subprocess.run([sys.executable, '-c', code, *map(str, args)], capture_output=True, text=True, env=env, cwd=root)
    if out.returncode: raise SystemExit(f'{root} failed:\n{out.stderr}')
    return out.stdout

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--m', type=int, default=200_000, help='vectors in the saved index')
    ap.add_argument('--n', type=int, default=10_000, help='vectors added')
    ap.add_argument('--dim', type=int, default=256, help='their dimension')
    ap.add_argument('--kinds', default='flat,ivf', help='index kinds, comma-separated')
    ap.add_argument('--runs', type=int, default=1, help='runs of each case (the table gives the one with the lowest peak)')
    ap.add_argument('--before', help='an older checkout of phoalign to measure beside this one')
    ap.add_argument('--work', default=None, help='a folder for the indexes (default: a temporary one; needs about 3 × M × dim × 4 bytes)')
    args = ap.parse_args()
    roots = [('this checkout', HERE)] + ([('before', Path(args.before).resolve())] if args.before else [])
    work = Path(args.work or tempfile.mkdtemp(prefix='index-add-')); work.mkdir(parents=True, exist_ok=True)
    vec_bytes = args.m * args.dim * 4
    print(f'M={args.m:,} vectors of {args.dim} dims ({vec_bytes / 2**20:.0f} MiB), adding N={args.n:,} ({args.n * args.dim * 4 / 2**20:.1f} MiB)\n')
    print('| case | checkout | peak RSS MiB | above start MiB | × vectors | load s | add s | save s | written MiB |\n|---|---|---|---|---|---|---|---|---|')
    try:
        for kind in args.kinds.split(','):
            base = work/f'{kind}-base'
            if not base.exists():
                t = time.perf_counter(); run(BUILD, HERE, base, kind, args.m, args.dim)
                print(f'(built the {kind} index in {time.perf_counter() - t:.0f}s)', file=sys.stderr)
            results = {label: [] for label, _ in roots}
            for _ in range(args.runs):
                for label, root in roots:   # alternating, so both see the same machine
                    case = work/f'{kind}-case'
                    shutil.rmtree(case, ignore_errors=True); shutil.copytree(base, case)
                    results[label].append(json.loads(run(CASE, root, case, args.n, args.dim).strip().splitlines()[-1]))
                    shutil.rmtree(case)
            for label, _ in roots:
                r = min(results[label], key=lambda r: r['peak'])
                above = r['peak'] - r['start']
                print(f'| {kind} M={args.m:,} +{args.n:,} | {label} | {r["peak"] / 2**20:.0f} | {above / 2**20:.0f} | {above / vec_bytes:.2f} | '
                      f'{r["load"]:.2f} | {r["add"]:.2f} | {r["save"]:.2f} | {r["written"] / 2**20:.1f} |', flush=True)
    finally:
        if not args.work: shutil.rmtree(work, ignore_errors=True)

if __name__ == '__main__': main()
