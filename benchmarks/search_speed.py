"""Search speed of phoalign's `EmbeddingIndex` against raw FAISS on the same data and parameters, on the CPU: queries/s of
1,000 queries at k=10 against 100k and 1M 512-d embeddings, exact (`flat`) and approximate (the kind `choose_index` picks
for that size: `ivf`), recall@10 of the approximate search against exact, and adding 10k vectors to a built index against
rebuilding it from scratch.

    python benchmarks/search_speed.py                    # 100k and 1M, flat + ivf: ~40 min on 2 cores (2 x 1M IVF k-means: ~20 min)
    python benchmarks/search_speed.py --quick            # 20k and 100k, 3 repeats: a few minutes
    python benchmarks/search_speed.py --sizes 100000 --kinds flat ivf hnsw ivfpq --threads 8

Data: random unit vectors have no cluster structure (every point is about equally far from every other, so IVF recall is
pessimistic and says little about real embeddings). The vectors here are clustered synthetic embeddings, seeded, float32,
L2-normalised: a mixture of `--clusters` Gaussian centres on the 512-d sphere with log-normal cluster sizes, each cluster
spread along its own 32-d subspace (decaying spectrum) plus a little isotropic noise (so nearest neighbours are
structured, as in real embeddings). The 1,000 test queries, the 1,000 tuning queries and the 10k added vectors are drawn
from the same mixture on other random streams: none of them is in the base. A smaller size is the first n vectors of the
largest one.

What is measured, for each size and kind:
- build s: `EmbeddingIndex(d, kind, factory).add(vectors, ids)` (training included for IVF kinds; string ids, as a gallery's
  paths), and the raw FAISS index built from `faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)`. For IVF kinds the
  raw index is by default a `faiss.clone_index` of phoalign's trained index, emptied and filled with the same vectors: the
  same coarse centroids, so both search exactly the same inverted lists and the comparison of search speed is exact
  (and 1M-vector k-means is not paid twice); its build column is then the add only (marked *). `--train-raw` trains it
  itself on the same training sample phoalign uses instead.
- approximate kinds are tuned by `index.tune(recall=0.95, k=10, queries=<tuning queries>)`; the raw index gets the same
  `nprobe`/`efSearch` through `faiss.ParameterSpace`.
- q/s: 1,000 / the median time of one batched call of the 1,000 test queries at k=10, after a warm-up, the calls of
  phoalign's `search` (ids), phoalign's `search_rows` (rows) and raw FAISS's `search` interleaved in the same repeats
  (`--repeats`, more for fast calls until 3 s are spent, at least `--min-repeats` once `--max-seconds` are spent), so that
  other load on the machine hits all three alike; the load average seen is printed. The ratios are given from the medians
  and from the best (fastest) call of each, the latter the least disturbed by other processes.
- recall@10: `index.recall_at(10, queries=<test queries>)` for phoalign, the same share for raw FAISS against
  `faiss.knn` exact results; "same" is the share of queries whose top-10 phoalign and raw FAISS return identically.
- plain baseline: torch float32 `(q @ base.T).topk(10)` over query chunks on the CPU (exact).
- incremental: `index.add` of 10k new vectors to the built index (phoalign and raw FAISS `add`), against rebuilding
  phoalign's index from scratch on all n + 10k vectors (train + add for IVF; add for flat); one timing each, so add
  times of a fraction of a second are at the mercy of other load. `--no-incremental` and `--no-torch` skip these.

For scale: a plain torch top-10 over 1M x 512 bf16 embeddings answers 1,000 queries in 9 ms on one H100.

Recall table (`--recall-table`; instead of the speed tables): is the recall `tune` reports the recall a user gets?

    python benchmarks/search_speed.py --recall-table --autofaiss-python ENV/bin/python --autofaiss-opq-python ENV2/bin/python
        # 100k x 256-d, ivf/hnsw/ivfpq: ~35 min on 2 cores, 20 of them autofaiss's OPQ training
    python benchmarks/search_speed.py --recall-table --sizes 1000000 --kinds ivf hnsw ivfpq --no-autofaiss   # 1M, phoalign only (autofaiss's OPQ at 1M: hours)
    python benchmarks/search_speed.py --recall-table --no-autofaiss             # phoalign only

- indexes: `factory_for(kind, n, d)`; the ivfpq rows get the code `factory_for` picks for a budget of `--pq-budget` times
  the float vectors (0.25: PQ128 at 256-d; 0.1: PQ64). IVF-PQ re-ranks
  `k_factor` × k candidates with the kept floats, so its codes no longer cap the recall; `tune` picks the factor.
- data: the clustered image vectors above (256-d by default here) and, for some of them, a caption vector: the image plus a
  shift every caption shares (the modality gap, `--caption-gap`) plus isotropic noise (`--caption-noise`), normalised:
  correlated with its image, not identical (the mean cosine is printed). 2,000 captions of random gallery images tune
  the index (`index.tune(recall, queries=captions, what='captions')`, as `encode_gallery` does for a captioned
  gallery); 2,000 captions of other gallery images are the held-out test queries. Ground truth: exact inner-product
  search (`faiss.knn`) of the test captions over the gallery.
- columns: the recall@10 `tune` reports, the recall@10 measured on the held-out test captions (they should agree within
  about 0.01 and the measured one meet the target), and what the measure before issue 21 did: tune on 1,000 stored
  vectors used as their own queries (each finds itself; IVF probes its own list first), the setting it picks, the
  recall it reports, and the recall the test captions then get.
- each build runs in its own process (`--child`): build s = reading the .npy + training + adding + tuning; build MiB =
  peak resident memory (VmHWM) less the resident memory after the imports (torch for phoalign), so the libraries do not
  count.
- autofaiss (`--autofaiss-python`: a Python with autofaiss, which wants numpy < 2, so its own virtual environment):
  `build_index` on the same vectors (an .npy folder) and the same FAISS structure (`index_key`: phoalign's `IVF…,Flat`,
  `HNSW32` (what autofaiss picks itself at these sizes under its default 16G budget), and for IVF-PQ autofaiss's own
  key for phoalign's list count and code size, `OPQ{m}_{y},IVF…,PQ{m}x8`, since it has no heuristics for a plain
  `IVF…,PQ{m}`; autofaiss 2.18 builds that with `faiss.OPQMatrix(d, M=…, d2=…)`, which faiss-cpu 1.15 refuses
  (keyword arguments: TypeError), so `--autofaiss-opq-python` names a Python with faiss-cpu 1.8.0 for those rows);
  its search setting is its own (the best recall within `max_index_query_time_ms`, 10 ms a query);
  recall@10 on the same held-out captions; build s excludes its speed/size report (`compute_fast_metrics`, about 10 s)
  and the write of the index to disk, parsed from its log; build MiB as above. The ratios are phoalign / autofaiss.
"""
import argparse, gc, json, os, platform, re, resource, statistics, subprocess, sys, tempfile, time, warnings
from pathlib import Path
import numpy as np
import faiss, torch
import pandas as pd
from phoalign.index import EmbeddingIndex, choose_index, factory_for, set_search_params

LOADS = []   # 1-minute load averages sampled during the timed searches (other processes share the CPU)

def log(*a): print(f'[{time.strftime("%H:%M:%S")}]', *a, file=sys.stderr, flush=True)

def embeddings(n:int, d:int=512, clusters:int=2048, stream:int=0, seed:int=0, rank:int=32, spread:float=1.0, iso:float=0.5) -> np.ndarray:
    "`n` clustered unit vectors `[n, d]` float32; the mixture depends on `seed` only, the draws on `(seed, stream)`."
    g = np.random.default_rng(seed)
    centres = g.standard_normal((clusters, d), dtype=np.float32); centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = g.lognormal(0, 1, clusters); weights /= weights.sum()
    spectrum = np.arange(1, rank + 1, dtype=np.float32) ** -0.5; spectrum *= spread / np.sqrt((spectrum ** 2).sum())
    draw = np.random.default_rng([seed, stream])
    labels = draw.choice(clusters, n, p=weights)
    out = draw.standard_normal((n, d), dtype=np.float32); out *= iso / np.sqrt(d)
    order = np.argsort(labels, kind='stable'); bounds = np.searchsorted(labels[order], np.arange(clusters + 1))
    for c in range(clusters):   # each cluster's own subspace, drawn from its own generator so it does not depend on n
        rows = order[bounds[c]:bounds[c + 1]]
        if not len(rows): continue
        basis = np.random.default_rng([seed, 1_000_000 + c]).standard_normal((rank, d), dtype=np.float32) / np.sqrt(d)
        out[rows] += centres[c] + (draw.standard_normal((len(rows), rank), dtype=np.float32) * spectrum) @ basis
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out

def training_sample(x:np.ndarray, nlist:int) -> np.ndarray:
    "The vectors phoalign trains an IVF index on (the rule of `phoalign.index._train`)."
    return x if len(x) <= 64 * nlist else x[np.sort(np.random.default_rng(0).choice(len(x), 64 * nlist, replace=False))]

def timed(fn):
    t0 = time.perf_counter(); out = fn(); return out, time.perf_counter() - t0

def interleaved(fns:dict, q:np.ndarray, k:int, repeats:int, min_repeats:int, max_seconds:float, min_seconds:float=3.0, max_repeats:int=50) -> tuple[dict, int]:
    """Median seconds of each `fn(q, k)`, the functions taking turns, and the number of turns: `repeats` turns, more (up to
    `max_repeats`) while fewer than `min_seconds` are spent, fewer (down to `min_repeats`) once `max_seconds` are spent."""
    for fn in fns.values(): fn(q[:100], k)   # warm-up: threads, pages, lazily built state
    times, t_start, r = {name: [] for name in fns}, time.perf_counter(), 0
    while True:
        for name, fn in fns.items(): times[name].append(timed(lambda: fn(q, k))[1])
        r, spent = r + 1, time.perf_counter() - t_start
        LOADS.append(os.getloadavg()[0])
        if r >= max_repeats or (r >= repeats and spent >= min_seconds) or (r >= min_repeats and spent > max_seconds): break
    return {name: statistics.median(t) for name, t in times.items()}, r, {name: min(t) for name, t in times.items()}

def recall(found:np.ndarray, exact:np.ndarray) -> float:
    return float(np.mean([len(set(a[a >= 0]) & set(e)) / len(e) for a, e in zip(found, exact)]))

def torch_topk(q:np.ndarray, base:np.ndarray, k:int, chunk:int=100) -> np.ndarray:
    "Exact top-k rows by inner product, float32 torch on the CPU, `chunk` queries at a time."
    b, out = torch.from_numpy(base), []
    with torch.inference_mode():
        for s in range(0, len(q), chunk): out.append((torch.from_numpy(q[s:s + chunk]) @ b.T).topk(k, dim=1).indices)
    return torch.cat(out).numpy()

def raw_index(kind:str, factory:str, ph:EmbeddingIndex, base:np.ndarray, train_raw:bool):
    "Raw FAISS index on the same vectors and parameters as `ph`; `(index, seconds, add_only)`."
    d = base.shape[1]
    if kind in ('ivf', 'ivfpq') and not train_raw:
        idx = faiss.clone_index(ph._faiss); idx.reset()     # phoalign's trained quantizer (and PQ codebooks), no vectors
        add_only = True
        _, secs = timed(lambda: idx.add(base))
    else:
        idx, add_only = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT), False
        def build():
            if not idx.is_trained: idx.train(training_sample(base, faiss.extract_index_ivf(idx).nlist))
            idx.add(base)
        _, secs = timed(build)
    ps = faiss.ParameterSpace()
    for k, v in ph.params.items(): ps.set_index_parameter(idx, k, v)
    return idx, secs, add_only

def fmt_n(n:int) -> str: return f'{n // 1_000_000}M' if n % 1_000_000 == 0 else f'{n // 1000}k' if n % 1000 == 0 else str(n)

def captions_for(images:np.ndarray, stream:int, seed:int=0, gap:float=0.5, noise:float=1.0) -> np.ndarray:
    "A caption vector for each image: the image, a shift all captions share (the modality gap) and isotropic noise, normalised."
    d = images.shape[1]
    shift = np.random.default_rng([seed, 7]).standard_normal(d).astype(np.float32); shift *= gap / np.linalg.norm(shift)
    out = images + shift + np.random.default_rng([seed, 100 + stream]).standard_normal(images.shape, dtype=np.float32) * (noise / np.sqrt(d))
    return out / np.linalg.norm(out, axis=1, keepdims=True)

def _memory_kib(key:str) -> int:
    "VmRSS, VmHWM, ... of this process in KiB (Linux)."
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(key + ':'))

def child_phoalign(folder:str, kind:str, factory:str, target:float, k:int, threads:int):
    "Build, tune on captions and measure one phoalign index (in its own process, for its peak memory); prints JSON."
    faiss.omp_set_num_threads(threads); torch.set_num_threads(threads)
    f = Path(folder)
    base_kib = _memory_kib('VmRSS')
    t0 = time.perf_counter()
    base = np.load(f/'emb'/'base.npy')
    ix = EmbeddingIndex(base.shape[1], kind, factory, use_gpu=False).add(base, [f'img{i:08d}' for i in range(len(base))])
    tuned = ix.tune(target, k, queries=np.load(f/'tune_q.npy'), what='captions')
    build_s, peak_kib = time.perf_counter() - t0, _memory_kib('VmHWM')
    test_q, exact = np.load(f/'test_q.npy'), np.load(f/'exact_test.npy')
    per_query = np.array([len(set(r[r >= 0]) & set(e)) / len(e) for r, e in zip(ix.search_rows(test_q, k)[1], exact)])
    measured, measured_se = float(per_query.mean()), float(per_query.std() / np.sqrt(len(per_query)))
    # before issue 21: stored vectors as their own queries (in the index, in the ground truth)
    own = base[np.sort(np.random.default_rng(0).choice(len(base), 1000, replace=False))]   # the old default: 1,000
    with warnings.catch_warnings(): warnings.simplefilter('ignore'); old = ix.tune(target, k, queries=own, what='stored vectors')
    print(json.dumps(dict(build_s=build_s, mib=(peak_kib - base_kib) / 1024, tuned=tuned, measured=measured, measured_se=measured_se, old=old,
                          old_measured=recall(ix.search_rows(test_q, k)[1], exact), params=dict(ix.params))))

AUTOFAISS_CHILD = r'''
import json, logging, io, re, sys, time
import numpy as np, faiss
def kib(key): return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(key + ':'))
folder, key, threads, k = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
faiss.omp_set_num_threads(threads)
from autofaiss import build_index
import autofaiss
log = io.StringIO(); handler = logging.StreamHandler(log); logging.getLogger('autofaiss').addHandler(handler)
base_kib = kib('VmRSS')
t0 = time.perf_counter()
index, infos = build_index(embeddings=folder + '/emb', index_path=folder + '/af.index', index_infos_path=folder + '/af.json', index_key=key,
                           metric_type='ip', max_index_memory_usage='4G', current_memory_available='8G', nb_cores=threads, verbose=logging.INFO)
total, peak_kib = time.perf_counter() - t0, kib('VmHWM')
spent = lambda what: sum(float(x) for x in re.findall(r'Finished "' + what + r'" in ([0-9.]+) secs', log.getvalue()))
reporting = spent('Compute fast metrics') + spent('Saving the index on local disk')
q, exact = np.load(folder + '/test_q.npy'), np.load(folder + '/exact_test.npy')
rows = index.search(q, k)[1]
measured = float(np.mean([len(set(a[a >= 0]) & set(e)) / len(e) for a, e in zip(rows, exact)]))
print(json.dumps(dict(build_s=total - reporting, total_s=total, mib=(peak_kib - base_kib) / 1024, key=key, param=infos.get('index_param'),
                      measured=measured, faiss=faiss.__version__)))
'''

def autofaiss_key(kind:str, factory:str, d:int) -> str:
    "The autofaiss `index_key` of the same FAISS structure as phoalign's `factory`."
    if kind == 'hnsw': return 'HNSW32'
    if kind == 'ivf': return factory
    nlist, m = (int(x) for x in re.match(r'IVF(\d+),PQ(\d+)', factory).groups())
    return f'OPQ{m}_{(min(d // m, 6) + 1) * m},IVF{nlist}{"_HNSW32" if nlist >= 1000 else ""},PQ{m}x8'   # autofaiss's get_optimal_quantization

def run_child(cmd:list, timeout:float=7200) -> dict:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode: raise RuntimeError(f'{" ".join(cmd[:4])}... failed ({r.returncode}):\n{r.stderr[-3000:]}')
    return json.loads(r.stdout.strip().splitlines()[-1])

def recall_table(a):
    "The recall table: what `tune` reports against what held-out caption queries get, and autofaiss beside it."
    d, kinds, nq = a.dim or 256, a.kinds or ['ivf', 'hnsw', 'ivfpq'], a.queries or 2000
    sizes = a.sizes or [100_000]
    cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), platform.processor())
    af_version = None
    if not a.no_autofaiss:
        r = subprocess.run([a.autofaiss_python, '-c', 'import autofaiss, faiss, numpy; print(getattr(autofaiss, "__version__", "?"), faiss.__version__, numpy.__version__)'],
                           capture_output=True, text=True)
        if r.returncode: sys.exit(f'autofaiss does not import with {a.autofaiss_python}: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}'
                                  ' (pass --autofaiss-python, or --no-autofaiss)')
        af_version = r.stdout.split()
    rows, af_rows = [], []
    n_max = max(sizes)
    base_all, t = timed(lambda: embeddings(n_max, d, a.clusters, 0, a.seed)); log(f'{n_max} x {d} image vectors in {t:.0f}s')
    with tempfile.TemporaryDirectory(prefix='phoalign-recall-') as tmp:
        folder = Path(tmp); (folder/'emb').mkdir()
        for n in sorted(sizes):
            base = base_all[:n]
            pick = np.random.default_rng([a.seed, 11]).choice(n, 2 * nq, replace=False)   # captioned images: tuning, then test
            tune_q = captions_for(base[pick[:nq]], 1, a.seed, a.caption_gap, a.caption_noise)
            test_q = captions_for(base[pick[nq:]], 2, a.seed, a.caption_gap, a.caption_noise)
            cosine = float((test_q * base[pick[nq:]]).sum(1).mean())
            exact = faiss.knn(test_q, base, a.k, metric=faiss.METRIC_INNER_PRODUCT)[1]
            np.save(folder/'emb'/'base.npy', base); np.save(folder/'tune_q.npy', tune_q); np.save(folder/'test_q.npy', test_q); np.save(folder/'exact_test.npy', exact)
            for kind in kinds:
                # IVF-PQ where a user needs it: the floats over the budget (choose_index's rule picks the code for it)
                factory = factory_for(kind, n, d, memory=int(n * d * 4 * a.pq_budget)) if kind == 'ivfpq' else factory_for(kind, n, d)
                log(f'n={n} {kind} {factory}: phoalign')
                r = run_child([sys.executable, __file__, '--child', str(folder), kind, factory, str(a.recall), str(a.k), str(a.threads)])
                rows.append(dict(n=n, kind=kind, factory=factory, cosine=cosine, **r)); log(f'  {r}')
                if af_version:
                    key = autofaiss_key(kind, factory, d)
                    log(f'n={n} {kind}: autofaiss {key}')
                    python = a.autofaiss_opq_python if key.startswith('OPQ') and a.autofaiss_opq_python else a.autofaiss_python
                    try: af = run_child([python, '-c', AUTOFAISS_CHILD, str(folder), key, str(a.threads), str(a.k)])
                    except RuntimeError as e: af = dict(error=str(e).splitlines()[-1], key=key)
                    af_rows.append(dict(n=n, kind=kind, ours=r, **af)); log(f'  {af}')
            gc.collect()
    print(f'CPU: {cpu}, {os.cpu_count()} cores; {a.threads} threads; faiss {faiss.__version__}, numpy {np.__version__}'
          + (f'; autofaiss {af_version[0]} (faiss {af_version[1]}, numpy {af_version[2]})' if af_version else ''))
    print(f'{d}-d clustered image vectors ({a.clusters} clusters, seed {a.seed}); caption vectors = image + gap {a.caption_gap} + noise {a.caption_noise}, '
          f'mean cosine with their image {rows[0]["cosine"]:.2f}; tuned to recall@{a.k} >= {a.recall} on {nq} captions, '
          f'measured on {nq} captions of other images against exact search; load average {os.getloadavg()[0]:.2f} at the end\n')
    print(f'| n | index | factory | tuned | recall@{a.k} reported by `tune` (captions) | measured (held-out captions) ± 1 s.e. | measured − reported | meets {a.recall} | '
          f'own-vector measure (before): setting, reported | held-out captions at that setting | build s | build MiB |')
    print('|---:|---|---|---|---:|---:|---:|---|---|---:|---:|---:|')
    for r in rows:
        setting = lambda t: ', '.join(f'{name}={t[name]}' for name in ('nprobe', 'efSearch', 'k_factor') if name in t)   # k_factor: IVF-PQ's re-ranking
        print(f'| {fmt_n(r["n"])} | {r["kind"]} | `{r["factory"]}` | {setting(r["tuned"])} | {r["tuned"]["recall"]:.4f} | {r["measured"]:.4f} ± {r["measured_se"]:.4f} | '
              f'{r["measured"] - r["tuned"]["recall"]:+.4f} | {"yes" if r["measured"] >= a.recall else "no"} | {setting(r["old"])}, {r["old"]["recall"]:.4f} | '
              f'{r["old_measured"]:.4f} | {r["build_s"]:.1f} | {r["mib"]:,.0f} |')
    if af_rows:
        print(f'\nautofaiss `build_index` on the same vectors and structure, its own search setting; recall@{a.k} on the same held-out captions; '
              'ratios phoalign / autofaiss')
        print(f'| n | index | autofaiss index_key | its setting | recall@{a.k} autofaiss | phoalign | build s autofaiss | phoalign | ratio | build MiB autofaiss | phoalign | ratio |')
        print('|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|')
        for r in af_rows:
            o = r['ours']
            if 'error' in r: print(f'| {fmt_n(r["n"])} | {r["kind"]} | `{r["key"]}` | failed: {r["error"]} | | {o["measured"]:.4f} | | {o["build_s"]:.1f} | | | {o["mib"]:,.0f} | |'); continue
            print(f'| {fmt_n(r["n"])} | {r["kind"]} | `{r["key"]}`{"" if r["faiss"] == faiss.__version__ else " (faiss " + r["faiss"] + ")"} | {r["param"]} | {r["measured"]:.4f} | {o["measured"]:.4f} | {r["build_s"]:.1f} | {o["build_s"]:.1f} | '
                  f'{o["build_s"] / r["build_s"]:.2f} | {r["mib"]:,.0f} | {o["mib"]:,.0f} | {o["mib"] / r["mib"]:.2f} |')

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    if len(sys.argv) > 1 and sys.argv[1] == '--child':   # one build of the recall table, in its own process
        return child_phoalign(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]))
    ap.add_argument('--sizes', type=int, nargs='+', default=None, help='default: 100k and 1M (--recall-table: 100k)')
    ap.add_argument('--kinds', nargs='+', choices=['flat', 'ivf', 'hnsw', 'ivfpq'], default=None,
                    help="default: flat (exact) and the approximate kind choose_index picks for the largest size")
    ap.add_argument('--dim', type=int, default=None, help='default 512 (--recall-table: 256)'); ap.add_argument('--queries', type=int, default=None, help='default 1000 (--recall-table: 2000 to tune, 2000 to test)')
    ap.add_argument('--k', type=int, default=10); ap.add_argument('--add', type=int, default=10_000)
    ap.add_argument('--recall', type=float, default=0.95, help='recall@k the approximate indexes are tuned to')
    ap.add_argument('--clusters', type=int, default=2048); ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--repeats', type=int, default=5); ap.add_argument('--min-repeats', type=int, default=3)
    ap.add_argument('--max-seconds', type=float, default=100, help='stop repeating a measurement (after --min-repeats) past this')
    ap.add_argument('--threads', type=int, default=os.cpu_count())
    ap.add_argument('--device', default='cpu', choices=['cpu'], help='CPU only (phoalign is given use_gpu=False)')
    ap.add_argument('--train-raw', action='store_true', help='train the raw IVF index itself instead of cloning phoalign\'s trained one')
    ap.add_argument('--no-incremental', action='store_true'); ap.add_argument('--no-torch', action='store_true', help='skip the torch baseline')
    ap.add_argument('--quick', action='store_true', help='20k and 100k, 3 repeats: a smoke test')
    ap.add_argument('--recall-table', action='store_true', help='the recall table (tune vs held-out captions, autofaiss beside) instead of the speed tables')
    ap.add_argument('--caption-gap', type=float, default=0.5); ap.add_argument('--caption-noise', type=float, default=1.0)
    ap.add_argument('--autofaiss-python', default=os.environ.get('AUTOFAISS_PYTHON', '/tmp/afenv/bin/python'),
                    help='a Python with autofaiss installed (it wants numpy < 2: its own virtual environment)')
    ap.add_argument('--autofaiss-opq-python', default=os.environ.get('AUTOFAISS_OPQ_PYTHON'),
                    help="a Python with autofaiss for its OPQ (IVF-PQ) keys: autofaiss 2.18's faiss.OPQMatrix(d, M=..., d2=...) fails on faiss-cpu 1.15 "
                         "(TypeError: unexpected keyword argument 'M') and works on 1.8.0")
    ap.add_argument('--pq-budget', type=float, default=0.25, help='ivfpq rows: the memory budget as a share of the float vectors (0.25: PQ128 at 256-d; 0.1: PQ64)')
    ap.add_argument('--no-autofaiss', action='store_true')
    a = ap.parse_args()
    if a.recall_table: return recall_table(a)
    a.sizes, a.dim, a.queries = a.sizes or [100_000, 1_000_000], a.dim or 512, a.queries or 1000
    if a.quick: a.sizes, a.repeats, a.min_repeats = [20_000, 100_000], 3, 2
    faiss.omp_set_num_threads(a.threads); torch.set_num_threads(a.threads)
    kinds = a.kinds or ['flat', choose_index(max(a.sizes), a.dim)[0]]
    t_all = time.perf_counter()
    cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), platform.processor()) if os.path.exists('/proc/cpuinfo') else platform.processor()
    mem = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30
    header = (f'CPU: {cpu}, {os.cpu_count()} cores, {mem:.0f} GiB; {a.threads} threads; faiss {faiss.__version__} '
              f'({faiss.get_compile_options().strip()}), torch {torch.__version__}, numpy {np.__version__}, pandas {pd.__version__}\n'
              f'{a.queries} held-out queries, k={a.k}, {a.dim}-d clustered synthetic embeddings ({a.clusters} clusters, seed {a.seed}); '
              f'approximate kinds tuned to recall@{a.k} >= {a.recall} on {a.queries} other held-out queries')
    log(header)

    n_max = max(a.sizes)
    (base_all, t) = timed(lambda: embeddings(n_max, a.dim, a.clusters, 0, a.seed)); log(f'{n_max} base vectors in {t:.0f}s')
    test_q, tune_q = embeddings(a.queries, a.dim, a.clusters, 1, a.seed), embeddings(a.queries, a.dim, a.clusters, 2, a.seed)
    new = embeddings(a.add, a.dim, a.clusters, 3, a.seed)
    ids_all = [f'img{i:08d}' for i in range(n_max)]
    new_ids = [f'new{i:08d}' for i in range(a.add)]
    rows, inc_rows, torch_rows = [], [], []
    for n in sorted(a.sizes):
        base, ids = base_all[:n], ids_all[:n]
        exact, t = timed(lambda: faiss.knn(test_q, base, a.k, metric=faiss.METRIC_INNER_PRODUCT)[1]); log(f'n={n}: exact ground truth in {t:.1f}s')
        if not a.no_torch:
            r_torch = recall(torch_topk(test_q, base, a.k), exact)
            tt, reps, _ = interleaved({'torch': lambda q, k: torch_topk(q, base, k)}, test_q, a.k, a.repeats, a.min_repeats, a.max_seconds)
            torch_rows.append((n, a.queries / tt['torch'], r_torch, reps))
            log(f'n={n}: torch top-{a.k} {a.queries / tt["torch"]:.0f} q/s')
        for kind in kinds:
            factory = factory_for(kind, n, a.dim)
            log(f'n={n} {kind} ({factory}): building')
            ph = EmbeddingIndex(a.dim, kind, factory, use_gpu=False)
            _, t_build = timed(lambda: ph.add(base, ids))
            tuned, t_tune = timed(lambda: ph.tune(a.recall, a.k, queries=tune_q)) if kind != 'flat' else ({}, 0.0)
            log(f'n={n} {kind}: phoalign built in {t_build:.1f}s, tuned in {t_tune:.1f}s: {tuned}')
            raw, t_raw, add_only = raw_index(kind, factory, ph, base, a.train_raw)
            log(f'n={n} {kind}: raw FAISS built in {t_raw:.1f}s{" (add only)" if add_only else ""}')
            tm, reps, best = interleaved({'search': ph.search, 'search_rows': ph.search_rows, 'raw': raw.search},
                                   test_q, a.k, a.repeats, a.min_repeats, a.max_seconds)
            ph_rows, raw_rows = ph.search_rows(test_q, a.k)[1], raw.search(test_q, a.k)[1]
            r_ph, r_raw = ph.recall_at(a.k, queries=test_q), recall(raw_rows, exact)
            same = float((ph_rows == raw_rows).all(1).mean())
            rows.append(dict(n=n, kind=kind, factory=factory, params=', '.join(f'{k}={v}' for k, v in ph.params.items()) or '-',
                             build=t_build, tune=t_tune, raw_build=t_raw, add_only=add_only, reps=reps,
                             qs=a.queries / tm['search'], qs_rows=a.queries / tm['search_rows'], qs_raw=a.queries / tm['raw'],
                             recall=r_ph, raw_recall=r_raw, same=same,
                             best_ratio=best['raw'] / best['search'], best_ratio_rows=best['raw'] / best['search_rows']))
            log(f'n={n} {kind}: search {rows[-1]["qs"]:.0f} q/s, search_rows {rows[-1]["qs_rows"]:.0f}, raw {rows[-1]["qs_raw"]:.0f}; '
                f'recall {r_ph:.4f} / raw {r_raw:.4f}; same top-{a.k} {same:.3f}')
            if not a.no_incremental:
                _, t_raw_add = timed(lambda: raw.add(new))
                del raw; gc.collect()
                _, t_add = timed(lambda: ph.add(new, new_ids))
                r_add = ph.recall_at(a.k, queries=test_q) if kind != 'flat' else None
                params, allv = dict(ph.params), ph.vectors      # phoalign's own n + add vectors, in row order
                del ph; gc.collect()
                log(f'n={n} {kind}: added {a.add} in {t_add:.2f}s (raw FAISS {t_raw_add:.2f}s); rebuilding on {len(allv)}')
                re = EmbeddingIndex(a.dim, kind, factory, use_gpu=False)
                _, t_rebuild = timed(lambda: re.add(allv, ids + new_ids))
                if params: set_search_params(re, params)           # the same nprobe/efSearch as the index added to
                r_re = re.recall_at(a.k, queries=test_q) if kind != 'flat' else None
                inc_rows.append(dict(n=n, kind=kind, factory=factory, add=t_add, raw_add=t_raw_add, rebuild=t_rebuild, recall_add=r_add, recall_rebuild=r_re,
                                     params=', '.join(f'{k}={v}' for k, v in params.items()) or '-'))
                log(f'n={n} {kind}: rebuilt in {t_rebuild:.1f}s')
                del re, allv
            else: del ph, raw
            gc.collect()

    print(header + '\n')
    print(f'Search: q/s = {a.queries} / median seconds of one batched call (k={a.k}), phoalign and raw FAISS interleaved in the same repeats')
    print('| n | index | factory | params | build s (phoalign / raw) | tune s | phoalign `search` q/s | `search_rows` q/s | raw FAISS q/s | search / raw (median; best) | search_rows / raw (median; best) | recall@10 (phoalign / raw) | same top-10 | repeats |')
    print('|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    for r in rows:
        print(f'| {fmt_n(r["n"])} | {r["kind"]}{" (exact)" if r["kind"] == "flat" else ""} | `{r["factory"]}` | {r["params"]} | {r["build"]:.1f} / {r["raw_build"]:.1f}{"*" if r["add_only"] else ""} | '
              f'{r["tune"]:.1f} | {r["qs"]:,.0f} | {r["qs_rows"]:,.0f} | {r["qs_raw"]:,.0f} | {r["qs"] / r["qs_raw"]:.2f}; {r["best_ratio"]:.2f} | {r["qs_rows"] / r["qs_raw"]:.2f}; {r["best_ratio_rows"]:.2f} | '
              f'{r["recall"]:.4f} / {r["raw_recall"]:.4f} | {r["same"]:.3f} | {r["reps"]} |')
    if any(r['add_only'] for r in rows): print('\n\\* raw FAISS IVF index cloned from phoalign\'s trained one (same centroids): add only, no training')
    if torch_rows:
        print(f'\nPlain baseline: torch float32 `(q @ base.T).topk({a.k})` on the CPU, {a.threads} threads, chunks of 100 queries (exact)')
        print(f'| n | q/s | recall@{a.k} | repeats |\n|---:|---:|---:|---:|')
        for n, qs, rc, reps in torch_rows: print(f'| {fmt_n(n)} | {qs:,.0f} | {rc:.4f} | {reps} |')
    if inc_rows:
        print(f'\nIncremental: `index.add` of {a.add:,} new vectors to the built index, against rebuilding phoalign\'s index from scratch on all of them '
              '(train + add for IVF), recall@10 at the same nprobe/efSearch')
        print('| n | index | add s (phoalign / raw FAISS) | rebuild s | rebuild / add | recall@10 after add | after rebuild | params |\n|---:|---|---:|---:|---:|---:|---:|---|')
        for r in inc_rows:
            rc = lambda v: 'exact' if v is None else f'{v:.4f}'
            print(f'| {fmt_n(r["n"])} + {fmt_n(a.add)} | {r["kind"]} `{r["factory"]}` | {r["add"]:.2f} / {r["raw_add"]:.2f} | {r["rebuild"]:.1f} | '
                  f'{r["rebuild"] / r["add"]:,.{0 if r["rebuild"] / r["add"] >= 10 else 1}f}x | {rc(r["recall_add"])} | {rc(r["recall_rebuild"])} | {r["params"]} |')
    print(f'\nFor scale: a plain torch top-10 over 1M x 512 bf16 embeddings answers 1,000 queries in 9 ms on one H100.')
    print(f'Load average (1 min) sampled during the timed searches: {min(LOADS):.2f} to {max(LOADS):.2f} (median {statistics.median(LOADS):.2f}) on {os.cpu_count()} cores')
    print(f'Total {(time.perf_counter() - t_all) / 60:.1f} min; peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB')

if __name__ == '__main__': main()
