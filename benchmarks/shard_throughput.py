"""Training images per second streamed from webdataset shards (`phoalign data shard`) against the folder reader
(`PairsDataset` over the image files), both through the same DataLoader, collate and `medium` augmentation, with 1 and
with 2 processes reading together (each its own part, as a torchrun run shares an epoch); side by side in one run.

    python benchmarks/shard_throughput.py [--n 1000] [--size 224] [--batch-size 32] [--workers 0] [--processes 1 2]

The images are 500x375 quality-90 JPEGs (the COCO size). The 2-process rate is all images over the wall time of the
slower process. Each reader first makes one untimed pass (the page cache then holds both copies of the data).
"""
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path

os.environ.setdefault('OMP_NUM_THREADS', '1')
HERE = Path(__file__).resolve().parent

WORKER = r'''
import json, sys, time, torch
import pandas as pd
from torch.utils.data import DataLoader, Subset
from phoalign.data.transforms import image_transform
from phoalign.data.datasets import PairsDataset, PairsCollate
from phoalign.data.shards import ShardSet, ShardStream
torch.set_num_threads(1)
kind, work, rank, world, bs, workers, size = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:8])
tfm = image_transform('medium', size, 'imagenet')
if kind == 'folder':
    pairs = pd.read_pickle(f'{work}/pairs.pkl')
    ds = PairsDataset(pairs, transform=tfm, seed=0)
    ds = Subset(ds, range(rank, len(ds) // world * world, world))   # a process's share, as a distributed sampler gives it
else:
    m = json.load(open(f'{work}/shards/shards.json'))['splits']['train']
    ds = ShardStream(ShardSet([f'{work}/shards/' + s['file'] for s in m['shards']], [s['samples'] for s in m['shards']]), tfm, seed=0).plan(bs, rank, world)
loader = DataLoader(ds, batch_size=bs, collate_fn=PairsCollate(None), num_workers=workers, shuffle=False)
n = sum(len(b['image']) for b in loader)                  # untimed pass
t0 = time.perf_counter(); n = sum(len(b['image']) for b in loader); dt = time.perf_counter() - t0
print(json.dumps(dict(images=n, seconds=dt)))
'''

def run(kind, work, world, a):
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    procs = [subprocess.Popen([sys.executable, '-c', WORKER, kind, str(work), str(r), str(world), str(a.batch_size), str(a.workers), str(a.size)],
                              stdout=subprocess.PIPE, text=True, env=env) for r in range(world)]
    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    if any(p.returncode for p in procs): sys.exit(f'{kind} with {world} processes failed')
    images, seconds = sum(o['images'] for o in outs), max(o['seconds'] for o in outs)
    return images, seconds

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=1000); ap.add_argument('--size', type=int, default=224)
    ap.add_argument('--batch-size', type=int, default=32); ap.add_argument('--workers', type=int, default=0)
    ap.add_argument('--processes', type=int, nargs='+', default=[1, 2])
    a = ap.parse_args()
    sys.path.insert(0, str(HERE))
    import pandas as pd
    from data_throughput import make_jpegs
    from phoalign.data.shards import write_shards
    work = Path(tempfile.mkdtemp(prefix='shard-throughput-'))
    paths = make_jpegs(a.n, work)
    pairs = pd.DataFrame(dict(image=[str(p) for p in paths], caption=[f'photo {i}' for i in range(a.n)], image_id=[str(i) for i in range(a.n)],
                              source='bench', split='train'))
    pairs.to_pickle(work/'pairs.pkl')
    t0 = time.perf_counter(); write_shards(pairs, work/'shards', shard_size=max(a.n // 8, 1), log=None); wrote = time.perf_counter() - t0
    print(f'{a.n} JPEGs of 500x375 -> {a.size}px, `medium` augmentation, batches of {a.batch_size}, {a.workers} DataLoader workers a process, '
          f'1 thread each; {os.cpu_count()} CPUs; shards written in {wrote:.1f}s ({a.n / wrote:.0f} images/s, each decoded once to check it)\n')
    print('| processes | reader | images | seconds | images/s | shards / folder |\n|---:|---|---:|---:|---:|---:|')
    for world in a.processes:
        f_img, f_s = run('folder', work, world, a)
        s_img, s_s = run('shards', work, world, a)
        print(f'| {world} | folder (PairsDataset) | {f_img} | {f_s:.1f} | {f_img / f_s:.0f} | 1.00x |')
        print(f'| {world} | shards (ShardStream) | {s_img} | {s_s:.1f} | {s_img / s_s:.0f} | {(s_img / s_s) / (f_img / f_s):.2f}x |')

if __name__ == '__main__': main()
