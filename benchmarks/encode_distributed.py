"""`phoalign encode` of one gallery by 1 process and by N processes under torchrun, side by side: time, images/s, and a
check that the two indexes are identical (same ids in the same order, same metadata, vectors equal to float tolerance).

    python benchmarks/encode_distributed.py                                    # CPU: 2 processes (gloo) vs 1, 2000 images
    python benchmarks/encode_distributed.py --device cuda --nproc 8 --n 50000 --size 224 --preset vignn-clip --workers 8

The gallery is the synthetic shapes set (`phoalign data synth --n N --size S`) and the model an untrained `--preset`
(its weights do not change the cost), saved once in `--work`. Each run is the command a user types, in a fresh index
folder: `phoalign encode` for 1 process, `torchrun --nproc_per_node N -m phoalign encode` for N, repeated `--repeats`
times alternately. Every process gets `--threads` CPU threads (OMP_NUM_THREADS), the single one too: the ratio is what
N - 1 more processes buy. "wall" counts the whole command (interpreters, model load, process group); "encode" is the
time `encode_gallery` reports (reading the index, encoding, merging, saving), which is what a large gallery scales with;
"CPU s" is the CPU time of all the command's processes (on a machine shared with other work, a steadier measure of cost).
"""
import argparse, json, os, resource, shutil, statistics, subprocess, sys, tempfile, time
from pathlib import Path

def cpu_seconds() -> float:
    "CPU seconds (user + system) of this process's finished children."
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime

def run(cmd:list, cwd:Path, threads:int) -> tuple[float, float, dict]:
    "Wall seconds of `cmd`, the CPU seconds of all its processes, and the JSON report it printed."
    env = {**os.environ, 'OMP_NUM_THREADS': str(threads), 'HF_HUB_OFFLINE': '1'}
    t0, c0 = time.perf_counter(), cpu_seconds()
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    if r.returncode: raise SystemExit(f'{" ".join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}')
    return wall, cpu, json.loads(r.stdout.strip().splitlines()[-1])

def same_index(a:Path, b:Path, atol:float) -> str:
    "Why the index folders `a` and `b` differ ('' when they hold the same rows, order, metadata and vectors)."
    import numpy as np
    from phoalign.index import EmbeddingIndex
    x, y = EmbeddingIndex.load(a), EmbeddingIndex.load(b)
    if x.ids != y.ids: return f'ids differ ({len(x)} vs {len(y)} rows)'
    if not x.meta.drop(columns='id').astype(str).equals(y.meta.drop(columns='id').astype(str)): return 'metadata differs'
    err = float(np.abs(x.vectors - y.vectors).max()) if len(x) else 0.0
    return '' if err <= atol else f'vectors differ by up to {err:.2e}'

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=2000, help='images in the gallery')
    ap.add_argument('--size', type=int, default=64, help='their side in pixels')
    ap.add_argument('--preset', default='tiny', help='the model preset (untrained)')
    ap.add_argument('--nproc', type=int, default=2, help='processes of the distributed run')
    ap.add_argument('--device', default='cpu', help="'cpu' or 'cuda' (each process of the distributed run takes cuda:LOCAL_RANK)")
    ap.add_argument('--batch-size', type=int, default=64, help='images per forward pass')
    ap.add_argument('--workers', type=int, default=0, help='decoding processes per encoding process')
    ap.add_argument('--threads', type=int, default=int(os.environ.get('OMP_NUM_THREADS', 1)), help='CPU threads per process')
    ap.add_argument('--repeats', type=int, default=2, help='runs of each, alternating (the median is shown)')
    ap.add_argument('--atol', type=float, default=1e-4, help='largest difference allowed between the two indexes\' vectors')
    ap.add_argument('--work', default=None, help='working folder (default: a temporary one, deleted after)')
    a = ap.parse_args()
    if a.nproc < 2: raise SystemExit('--nproc: give at least 2 (the distributed run beside the one-process run)')
    work = Path(a.work or tempfile.mkdtemp(prefix='phoalign-encode-dist-')); work.mkdir(parents=True, exist_ok=True)
    phoalign, torchrun = shutil.which('phoalign'), Path(sys.executable).parent/'torchrun'
    if not phoalign: raise SystemExit('the `phoalign` console script is not installed')
    try:
        if not (work/'s'/'captions_en.json').exists():
            subprocess.run([phoalign, 'data', 'synth', '--out', 's', '--n', str(a.n), '--size', str(a.size), '--lang', 'en'], cwd=work, check=True, capture_output=True)
        if not (work/'model.pt').exists():
            from phoalign.model import create_model, save_model
            from phoalign.data.formats import read_pairs
            save_model(create_model(a.preset, captions=read_pairs(work/'s'/'captions_en.json').caption.tolist()), work/'model.pt')
        args = ['encode', 'model.pt', '--images', 's/images', '--device', a.device, '--batch-size', a.batch_size, '--workers', a.workers, '--json']
        times = {1: [], a.nproc: []}
        for rep in range(a.repeats):
            for n in times:
                out = work/f'index-{n}'
                shutil.rmtree(out, ignore_errors=True)
                cmd = [phoalign, *args, '--out', out] if n == 1 else [torchrun, '--nproc_per_node', n, '-m', 'phoalign', *args, '--out', out]
                wall, cpu, report = run(cmd, work, a.threads)
                if (report['encoded'], report['processes']) != (a.n, n): raise SystemExit(f'{n} processes: {report}')
                times[n].append((wall, report['seconds'], cpu))
                print(f'run {rep + 1}/{a.repeats}, {n} process{"es" * (n > 1)}: wall {wall:.1f}s, encode {report["seconds"]:.1f}s, CPU {cpu:.1f}s', file=sys.stderr, flush=True)
        differ = same_index(work/'index-1', work/f'index-{a.nproc}', a.atol)
        if differ: raise SystemExit(f'the indexes differ: {differ}')
        med = {n: tuple(statistics.median(x[i] for x in t) for i in range(3)) for n, t in times.items()}
        print(f'\nphoalign encode, {a.n} images of {a.size}px, {a.preset} (untrained), {a.device}, batch {a.batch_size}, {a.workers} decoding workers, '
              f'{a.threads} thread(s) per process, median of {a.repeats}; indexes identical (ids, order, metadata; vectors within {a.atol:g})\n')
        print('| images | processes | wall s | encode s | images/s (encode) | speed-up (encode) | speed-up (wall) | CPU s (all processes) |')
        print('|---:|---:|---:|---:|---:|---:|---:|---:|')
        for n, (wall, enc, cpu) in med.items():
            print(f'| {a.n} | {n} | {wall:.1f} | {enc:.1f} | {a.n / enc:.0f} | {med[1][1] / enc:.2f}x | {med[1][0] / wall:.2f}x | {cpu:.1f} |')
    finally:
        if not a.work: shutil.rmtree(work, ignore_errors=True)

if __name__ == '__main__':
    main()
