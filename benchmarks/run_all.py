"""Every benchmark in one call, one combined table: whoever first has a GPU measures everything with one command.

    python benchmarks/run_all.py --device cuda --json out.json     # sized to finish in under 10 minutes on one H100
    python benchmarks/run_all.py --device cpu --quick              # a tiny version of everything (a few minutes): the orchestration
    python benchmarks/run_all.py --only vig_speed cir_speed        # some of them

Each benchmark script runs as a user runs it, in its own interpreter, with arguments sized for `--device` (and `--quick`),
under its own timeout and inside the overall `--budget`; one that fails, times out or lacks what it needs (a reference
implementation that is not installed, a download on an offline machine) is skipped with the reason, and the others go on.
The scripts print Markdown tables; this one reads them and puts the main number of each row in one table: benchmark,
metric, phoalign, reference (the other implementation measured in the same run, or the published figure the script
quotes), ratio (phoalign over the reference as the script gives it; for times, lower is better). `--json` writes the rows,
each script's full output and the skips.

Left out: `cli_startup`, `fingerprint_speed` and `serve_load` (CPU and process-start measurements, not a GPU's) and
`side_by_side` (a helper the others import for `--compare-with`).
"""
import argparse, json, os, re, subprocess, sys, time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# per benchmark (SCRIPT or SCRIPT/PART: one script run twice, so that one part's failure leaves the other's rows):
# (arguments on a GPU, arguments with --quick, timeout in seconds on a GPU, timeout with --quick)
# GPU sizes: the scripts' own GPU defaults where they finish in about a minute, smaller where they would not.
BENCHMARKS = {
    'vig_speed': (['--device', 'cuda'],   # pvig_s and pvig_ti, batch 128, 224 px, bf16: ViG-S train/infer img/s
                  ['--device', 'cpu', '--batch', '2', '--iters', '1', '--warmup', '1', '--size', '64', '--models', 'pvig_ti_224_gelu',
                   '--precision', 'fp32'], 90, 60),
    'train_throughput': (['--device', 'cuda', '--presets', 'phoclip', 'vignn-clip', '--steps', '5'],   # phoalign's presets, batch 256, bf16
                         ['--device', 'cpu', '--batch', '4', '--steps', '2', '--size', '64', '--presets', 'vignn-clip', '--precision', 'no'], 120, 150),
    'train_throughput/clip': (['--device', 'cuda', '--presets', 'clip-rn50x4', 'clip-vit-b-32', '--steps', '5'],   # the CLIP training step (open_clip's
                              ['--device', 'cpu', '--batch', '2', '--steps', '1', '--size', '224', '--presets', 'clip-vit-b-32', '--precision', 'no'], 120, 150),  # towers)
    'cir_speed': (['--device', 'cuda', '--full', '--seed-loop-max-batch', '512', '--repeats', '3'],   # Combiner and MoE step, CIRR-size metrics
                  ['--device', 'cpu', '--sizes', '64,32,64,16', '--seed-loop-max-batch', '64', '--no-metrics', '--repeats', '1'], 90, 60),
    'heads_speed': (['--device', 'cuda', '--no-memory'],
                    ['--device', 'cpu', '--rows', '2000', '--steps', '2', '--warmup', '1', '--repeats', '1', '--no-memory'], 60, 180),
    'cifar_speed': (['--device', 'cuda', '--repeats', '2'],
                    ['--device', 'cpu', '--images', '128', '--batch', '32', '--repeats', '1', '--warmup', '1', '--depth', '1', '--embed-dim', '96'], 60, 120),
    'search_speed': (['--sizes', '1000000', '--kinds', 'flat', 'ivf', '--repeats', '3', '--min-repeats', '1', '--max-seconds', '20',
                      '--no-incremental', '--no-autofaiss'],   # top-10 over 1M vectors (FAISS on the CPU cores: phoalign's index is CPU)
                     ['--sizes', '20000', '--kinds', 'flat', 'ivf', '--queries', '200', '--repeats', '1', '--min-repeats', '1', '--max-seconds', '5',
                      '--no-incremental', '--no-autofaiss', '--no-torch'], 180, 120),
    'serve_speed': (['--device', 'cuda', '--sizes', 'gallery', '100000', '--concurrency', '1', '32', '--requests', '400'],
                    ['--sizes', 'gallery', '--concurrency', '1', '--requests', '20', '--warmup', '1'], 90, 90),
    'data_throughput': ([], ['--n', '16', '--size', '64', '--repeats', '1'], 40, 30),   # decoded + augmented images/s per core
    'index_add': (['--m', '200000', '--n', '10000'], ['--m', '20000', '--n', '1000', '--dim', '64'], 40, 60),
    'shard_throughput': (['--n', '4000', '--workers', '4', '--processes', '1', '2'],   # training images/s streamed from shards vs the folder reader
                         ['--n', '48', '--size', '64', '--batch-size', '8', '--processes', '1'], 180, 90),
    'outside_speed': (['--images', '64', '--repeats', '2'],
                      ['--images', '16', '--batch', '8', '--layers', '1', '--width', '64', '--size', '64', '--repeats', '1'], 40, 60),
}

def md_tables(text:str) -> list[list[dict]]:
    "The pipe tables in `text` (Markdown's, or without the outer pipes), each a list of rows (header -> cell)."
    tables, lines = [], text.splitlines()
    def cells(line):
        l = line.strip()
        if l.startswith('|'): l = l[1:-1] if l.endswith('|') else l[1:]
        return [c.strip() for c in l.split('|')]
    def rule(line): return '|' in line and '-' in line and set(line.strip()) <= set('|-: ')
    for i, line in enumerate(lines[:-1]):
        if '|' in line and not rule(line) and rule(lines[i + 1]):
            head, rows = cells(line), []
            for row in lines[i + 2:]:
                if not row.strip(): break
                if '|' not in row: continue   # a log line printed inside the table
                if len(cells(row)) == len(head): rows.append(dict(zip(head, cells(row))))
            tables.append(rows)
    return tables

def space_table(text:str, first:str) -> list[dict]:
    "A table printed in columns two or more spaces apart, from its header line (starting with `first`) to a blank line."
    lines = text.splitlines()
    start = next((i for i, l in enumerate(lines) if l.startswith(first + ' ')), None)
    if start is None: return []
    head, rows = re.split(r'\s{2,}', lines[start].strip()), []
    for l in lines[start + 1:]:
        if not l.strip(): break
        cells = re.split(r'\s{2,}', l.strip())
        if len(cells) == len(head): rows.append(dict(zip(head, cells)))
    return rows

def number(cell) -> float|None:
    "The first number in a table cell (`1,118`, `2.18 (2.18–2.18)`, `2.56x`), or None."
    m = re.search(r'-?\d[\d,]*(\.\d+)?', str(cell or '').replace('\u2009', ''))
    return float(m.group(0).replace(',', '')) if m else None

def col(row:dict, *words) -> str|None:
    "The first column of `row` whose header holds every one of `words` (case-insensitive)."
    for k in row:
        if all(w.lower() in k.lower() for w in words): return k

def rows_of(name:str, tables:list[list[dict]]) -> list[dict]:
    "The combined table's rows for the output of benchmark `name`: metric, phoalign, reference, ratio."
    out = []
    def add(metric, ours, ref=None, ratio=None, compute=True):
        ours, ref, ratio = number(ours), number(ref), number(ratio)
        if compute and ratio is None and ours is not None and ref: ratio = round(ours / ref, 3)
        if ours is not None: out.append(dict(benchmark=name, metric=metric, phoalign=ours, reference=ref, ratio=ratio))
    for t in tables:
        for r in t:
            first = next(iter(r.values()))
            if name == 'vig_speed' and col(r, 'train img/s'):
                ref, ratio = ((r.get(col(r, w)) or '').split('/') for w in ('reference', 'ratio'))   # a published H100 figure:
                for i, what in enumerate(('train', 'inference')):                                # a ratio only on a GPU (the script's)
                    add(f'{first} {what} img/s', r[col(r, f'{what} img/s')], ref[i] if len(ref) == 2 else None,
                        ratio[i] if len(ratio) == 2 else None, compute=False)
            elif name == 'cifar_speed' and col(r, 'images/s'):
                if 'phoalign' in first:
                    ref = next((x for x in t if next(iter(x.values())).startswith('bare PyTorch loop')), None)
                    add('Trainer images/s (paired CIFAR)', r[col(r, 'images/s')], ref[col(ref, 'images/s')] if ref else None, r.get(col(r, '×')))
            elif name.startswith('train_throughput') and col(r, 'img/s'):
                ours = [k for k in r if 'phoalign' in k.lower() or 'trainer' in k.lower()]
                refs = [k for k in r if 'bare' in k.lower() or 'loop' in k.lower()]
                if ours: add(f'{first} images/s', r[ours[0]], r[refs[0]] if refs else None, r.get(col(r, 'ratio')))
                else: add(' '.join(list(r.values())[:2]) + ' images/s', r[col(r, 'img/s')])
            elif name == 'cir_speed' and col(r, 'ms'):
                sizes = '/'.join(r[k] for k in ('batch', 'projection', 'hidden', 'features') if k in r)
                plain = next((x for x in t if 'CLIP4Cir' in x.get('combiner', '') and all(x.get(k) == r.get(k) for k in ('batch', 'projection', 'hidden', 'features'))), None)
                add(f'{r.get("combiner", first)} {sizes} ms', r[col(r, 'ms')], plain[col(plain, 'ms')] if plain else None, r.get(col(r, '×')))
            elif name == 'cir_speed' and len(r) > 1:
                add(' '.join(list(r.values())[:2]), list(r.values())[-1])
            elif name == 'heads_speed' and col(r, 'steps/s') and col(r, 'pairs/s'):
                add(f'{first} head steps/s', r[col(r, 'steps/s')])
            elif name == 'heads_speed' and col(r, 'memory-mapped'):
                add(f'{first} head steps/s from a memory-mapped split', r[col(r, 'memory-mapped')], r[col(r, 'random features')], r.get(col(r, 'ratio')))
            elif name == 'search_speed' and col(r, 'raw FAISS q/s'):
                what = f'{r.get("n", first)} {r.get("index", "")}'
                add(f'{what} top-10 search queries/s', r[col(r, 'phoalign `search`')], r[col(r, 'raw FAISS q/s')], r.get(col(r, 'search / raw')))
                rec = (r.get(col(r, 'recall@')) or '').split('/')
                if len(rec) == 2: add(f'{what} recall@10', rec[0], rec[1])
            elif name == 'serve_speed' and col(r, 'q/s'):
                add(f'{first} {r.get("path", "")} max batch {r.get("max batch") or "-"} concurrency {r.get("concurrency", "")} queries/s', r[col(r, 'q/s')])
            elif name == 'data_throughput' and col(r, 'images/s'):
                if 'phoalign' in first:
                    ref = next((x for x in t if 'torchvision' in next(iter(x.values()))), None)
                    add('decoded + augmented images/s per core', r[col(r, 'images/s')], ref[col(ref, 'images/s')] if ref else None, r.get('ratio'))
            elif name == 'shard_throughput' and col(r, 'images/s') and 'shards' in r.get('reader', ''):
                ref = next((x for x in t if x.get('processes') == r.get('processes') and 'folder' in x.get('reader', '')), None)
                add(f'{r.get("processes")} process(es) images/s streamed from shards', r[col(r, 'images/s')], ref[col(ref, 'images/s')] if ref else None)
            else:   # the rest: each numeric cell of the row, phoalign's where a column says so
                ours = [k for k in r if 'phoalign' in k.lower()]
                refs = [k for k in r if k not in ours and any(w in k.lower() for w in ('faiss', 'library', 'bare', 'raw', 'torch'))]
                if ours: add(f'{first} {ours[0]}', r[ours[0]], r[refs[0]] if refs else None)   # the ratio: phoalign / reference
                else:
                    for k, v in list(r.items())[1:]:
                        if number(v) is not None and not re.fullmatch(r'[\d,]+', first): add(f'{first} {k}', v); break
    return out

def run(name:str, args:list, timeout:float) -> dict:
    "Run one benchmark script; its output, exit code and seconds."
    t0 = time.time()
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    try:
        p = subprocess.run([sys.executable, str(HERE/f'{name.split("/")[0]}.py'), *args], capture_output=True, text=True, timeout=timeout, env=env)
        return dict(rc=p.returncode, stdout=p.stdout, stderr=p.stderr, seconds=round(time.time() - t0, 1))
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or '')
        return dict(rc=None, stdout=out, stderr=f'timed out after {timeout:.0f} s', seconds=round(time.time() - t0, 1))

def reason(res:dict) -> str:
    "Why a benchmark gave no table: the timeout, or the last line of its error."
    if res['rc'] is None: return res['stderr']
    lines = [l for l in (res['stderr'] or res['stdout']).strip().splitlines() if l.strip()]
    return f'exit {res["rc"]}: ' + (lines[-1][:200] if lines else 'no output')

def fmt(v) -> str:
    if v is None: return ''
    return f'{v:,.0f}' if abs(v) >= 100 else f'{v:.3g}'

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--device', default='cuda', choices=['cuda', 'cpu'], help='cuda: the GPU sizes; cpu: the same scripts on the CPU (with --quick: tiny sizes)')
    ap.add_argument('--quick', action='store_true', help='tiny sizes: proves the orchestration in a few minutes on a CPU')
    ap.add_argument('--json', default=None, help='write the rows, the outputs and the skips to this file')
    ap.add_argument('--only', nargs='+', choices=list(BENCHMARKS), help='run only these')
    ap.add_argument('--budget', type=float, default=None, help='seconds for everything; a benchmark gets at most what is left '
                    '(default: 570 on a GPU, 900 with --quick on a shared CPU)')
    a = ap.parse_args()
    a.budget = a.budget or (900 if a.quick else 570)
    if a.device == 'cuda':
        import torch
        if not torch.cuda.is_available(): ap.error('--device cuda: no CUDA device here (use --device cpu --quick to check the orchestration)')
    t0, results, rows, skipped = time.time(), {}, [], []
    for name in a.only or BENCHMARKS:
        gpu_args, quick_args, gpu_timeout, quick_timeout = BENCHMARKS[name]
        args = quick_args if a.quick else [x if x != 'cuda' else a.device for x in gpu_args]
        left = a.budget - (time.time() - t0)
        if left < 10: skipped.append(dict(benchmark=name, reason=f'the --budget of {a.budget:.0f} s was spent')); continue
        res = results[name] = dict(args=args, **run(name, args, min(quick_timeout if a.quick else gpu_timeout, left)))
        tables = md_tables(res['stdout']) + ([space_table(res['stdout'], 'family')] if name == 'outside_speed' else [])
        got = rows_of(name, tables) if res['rc'] == 0 else []
        if res['rc'] != 0: skipped.append(dict(benchmark=name, reason=reason(res)))
        elif not got: skipped.append(dict(benchmark=name, reason='ran, but printed no table this script reads'))
        rows += got
        print(f'{name}: {"ok" if got else "skipped"} ({res["seconds"]:.0f} s, {len(got)} rows)', file=sys.stderr, flush=True)
    import torch
    where = torch.cuda.get_device_name() if a.device == 'cuda' else f'CPU ({os.cpu_count()} cores)'
    print(f'\n{where}; torch {torch.__version__}; {"quick sizes" if a.quick else "full sizes"}; {time.time() - t0:.0f} s in all\n')
    print('| benchmark | metric | phoalign | reference | ratio |\n|---|---|---:|---:|---:|')
    for r in rows: print(f'| {r["benchmark"]} | {r["metric"]} | {fmt(r["phoalign"])} | {fmt(r["reference"])} | {fmt(r["ratio"])} |')
    for s in skipped: print(f'skipped {s["benchmark"]}: {s["reason"]}')
    if a.json:
        Path(a.json).write_text(json.dumps(dict(device=where, quick=a.quick, seconds=round(time.time() - t0, 1), rows=rows, skipped=skipped,
                                                runs=results), indent=1))
        print(f'\nwritten: {a.json}')
    return 0 if rows else 1

if __name__ == '__main__':
    sys.exit(main())
