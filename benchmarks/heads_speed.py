"""Projection heads on pre-encoded embeddings: head-only training speed, and the memory of memory-mapped loading.

    python benchmarks/heads_speed.py                              # CPU: the three tables, table 3 on 473k rows (5 GB of float16 under /tmp)
    python benchmarks/heads_speed.py --rows 20000                 # a quick try
    python benchmarks/heads_speed.py --device cuda --no-memory    # tables 1 and 2 on a GPU (table 3 is host memory: the same anywhere)
    python benchmarks/heads_speed.py --workdir /scratch           # where the benchmark splits are written

Table 1, head-only training steps/s at the seed's dimensions (1152-d SigLIP image and 4096-d E5 text embeddings), batch
512, output 512, fp32: every shipped heads config (`phoalign/configs/heads/*.yaml`, as `phoalign heads train NAME` builds
it) with its head options and its loss (blip: blip, siglip: siglip, queue: queue, the others clip). A step is the
Trainer's step: forward, the loss, its non-finite check, backward, clipping at the config's max_grad_norm, AdamW, the
logit-scale clamp and the momentum update (blip). Random features already on the device: no data loading. `--warmup`
steps, then `--repeats` runs of `--steps` timed steps (torch.cuda.synchronize on a GPU): the median rate, and in brackets
the slowest and fastest run (a shared CPU's other work shows there). Params: the trainable parameters of both heads (the
blip head's momentum copies not counted).

Table 2, the data path's cost: the same step for `--data-heads` (mlp and clip, the lightest, by default) fed with random
features as in table 1, and with batches of `EmbeddingPairs` over a memory-mapped split (`--dtype`) through a shuffled
DataLoader (no workers, as the shipped configs), `.to(device)` included; both measured side by side in this run (their
timed runs alternate), the ratio is the quotient of the medians. The split was just written, so its pages are in the
page cache: this is the cost of gathering and converting rows, not of reading a disk.

Table 3, peak memory of one shuffled pass of batches of 512 over a split of `--rows` rows x (1152 + 4096) stored as
`--dtype` (float16 by default: 473k rows of float32 are 9.9 GB), written chunk by chunk with `SplitWriter` (its time is
shown), each way in its own process so that peaks do not mix:
- mmap: `load_split(..., mmap=True)` and `EmbeddingPairs` in a DataLoader (phoalign's default);
- whole: `load_split(..., mmap=False)`, the same pass;
- seed: the seed's way, re-implemented from its description: `torch.load` of both tensors whole, made float32 (the seed's
  files are float32), a Dataset indexing them row by row, the default collate.
Memory comes from /proc/self/status, sampled every 10 ms. Anonymous memory (RssAnon) is what the process holds. File-backed
memory (RssFile) is the pages of mapped files it has touched (the split's, and the shared libraries'): page cache, shared
with other readers, which the kernel drops when memory is short, so it is shown apart. Peak RSS (VmHWM, the kernel's exact
peak; `ru_maxrss` is not used, as it is carried over from the parent across exec) counts both. 'held' is the anonymous
memory once loaded, before the pass; the first row is a process that loads nothing (imports only). With float16 files
the seed's `.float()` briefly holds both copies of a tensor (its peak); reading float32 files, as the seed did, it would
hold the float32 tensors only (its 'held').
Nothing is extrapolated: every number is of the rows written in this run.

The splits are written in a temporary folder under `--workdir` (default: the system's temporary folder), deleted at the end,
also on an error, Ctrl-C or SIGTERM; the free disk space is checked before anything is written.
"""
import argparse, itertools, json, os, shutil, signal, statistics, subprocess, sys, tempfile, threading, time
from pathlib import Path
import torch

IMAGE_DIM, TEXT_DIM, BATCH, GiB = 1152, 4096, 512, 2**30

def sync(device):
    if device.type == 'cuda': torch.cuda.synchronize(device)

def trainer_step(name:str, device):
    "The shipped heads config `name` at batch 512 on the seed's widths: its config, the Trainer's step `(image, text)`, trainable params (M)."
    from phoalign.embeddings import read_heads_config, heads_model_config
    from phoalign.model import create_model
    from phoalign.losses import loss_from_config, loss_inputs, clamp_logit_scale_
    torch.manual_seed(0)
    cfg = heads_model_config(read_heads_config(name, f'training.batch_size={BATCH}'), IMAGE_DIM, TEXT_DIM)
    model, loss_fn = create_model(cfg).to(device).train(), loss_from_config(cfg.loss).to(device).train()
    opt = torch.optim.AdamW(model.param_groups(cfg.train.lr, cfg.train.weight_decay))
    takes, clip = loss_inputs(loss_fn), cfg.train.grad_clip
    def step(image, text):
        out = model(image, text)
        loss = loss_fn(**{k: out[k] for k in takes if k in out}, output_dict=True)['loss']
        if not torch.isfinite(loss).item(): raise RuntimeError(f'{name}: the loss is {loss.item()}')
        loss.backward()
        if clip: torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step(); opt.zero_grad(set_to_none=True)
        if model.logit_scale is not None: clamp_logit_scale_(model.logit_scale)
        model.update_momentum()
    return cfg, step, sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6

def rates(step, sources:list, device, a) -> list[list[float]]:
    "Steps/s of `step` fed by each of `sources` (iterators of (image, text)): `a.warmup` steps, then `a.repeats` runs of `a.steps`, the sources in turn."
    for batches in sources:
        for _ in range(a.warmup): step(*next(batches))
    out = [[] for _ in sources]
    for _ in range(a.repeats):
        for batches, r in zip(sources, out):
            sync(device); t = time.perf_counter()
            for _ in range(a.steps): step(*next(batches))
            sync(device); r.append(a.steps / (time.perf_counter() - t))
    return out

def spread(r:list) -> str: return f'{statistics.median(r):.2f} ({min(r):.2f}–{max(r):.2f})'

def random_batches(device):
    g = torch.Generator().manual_seed(0)
    return itertools.repeat((torch.randn(BATCH, IMAGE_DIM, generator=g).to(device), torch.randn(BATCH, TEXT_DIM, generator=g).to(device)))

def split_batches(split, device):
    "(image, text) batches of `EmbeddingPairs` over `split` through a shuffled DataLoader, epoch after epoch, moved to `device`."
    from torch.utils.data import DataLoader
    from phoalign.embeddings import EmbeddingPairs
    ds = EmbeddingPairs(split)
    loader = DataLoader(ds, batch_size=BATCH, shuffle=True, drop_last=True, collate_fn=ds.collate)
    while True:
        for b in loader: yield b['image'].to(device), b['text'].to(device)

def speed_table(device, a):
    from phoalign.embeddings import heads_configs
    print(f'\nTable 1: head-only training, batch {BATCH}, image {IMAGE_DIM}-d, text {TEXT_DIM}-d, output 512, fp32, AdamW; random features on the device')
    print(f'{a.warmup} warm-up steps, then the median of {a.repeats} runs of {a.steps} steps\n')
    print('| config | head | loss | params (M) | steps/s (slowest–fastest run) | pairs/s |\n|---|---|---|---:|---:|---:|')
    for name in heads_configs():
        cfg, step, params = trainer_step(name, device)
        [r] = rates(step, [random_batches(device)], device, a)
        print(f'| {name} | {cfg.model.head} | {cfg.loss.name} | {params:.2f} | {spread(r)} | {statistics.median(r) * BATCH:,.0f} |', flush=True)
        del step

def write_split(folder, rows:int, dtype:str, chunk:int=16384) -> tuple[float, float]:
    "A split 'bench' of `rows` random rows written with `SplitWriter`; the seconds of the writes (random generation excluded) and of the fsync."
    from phoalign.embeddings import SplitWriter, split_files
    g, spent = torch.Generator().manual_seed(0), 0.0
    with SplitWriter(folder, 'bench', rows, IMAGE_DIM, TEXT_DIM, dtype, dtype, overwrite=True) as w:
        for s in range(0, rows, chunk):
            n = min(chunk, rows - s)
            image, text = torch.randn(n, IMAGE_DIM, generator=g), torch.randn(n, TEXT_DIM, generator=g)
            t = time.perf_counter(); w.image[s:s + n], w.text[s:s + n] = image, text; spent += time.perf_counter() - t
        w.metadata = dict(image_ids=[i // 5 for i in range(rows)], caption_ids=list(range(rows)))
        t = time.perf_counter()
    spent += time.perf_counter() - t   # renaming the files into place, writing the metadata
    t = time.perf_counter()
    for k in ('image', 'text'):
        fd = os.open(split_files(folder, 'bench')[k], os.O_RDONLY)
        try: os.fsync(fd)
        finally: os.close(fd)
    return spent, time.perf_counter() - t

def data_table(device, a, work:Path):
    from phoalign.embeddings import load_split
    rows = BATCH * (a.warmup + a.steps * a.repeats + 1)
    write_split(work/'data', rows, a.dtype)
    split = load_split(work/'data', 'bench', mmap=True)
    print(f'\nTable 2: the data path: the same step fed by EmbeddingPairs over a memory-mapped split ({rows:,} rows, {a.dtype}, in the page cache), '
          'shuffled DataLoader, no workers\n')
    print('| config | random features steps/s | memory-mapped split steps/s | ratio |\n|---|---:|---:|---:|')
    for name in a.data_heads:
        _, step, _ = trainer_step(name, device)
        fast, data = rates(step, [random_batches(device), split_batches(split, device)], device, a)
        print(f'| {name} | {spread(fast)} | {spread(data)} | {statistics.median(data) / statistics.median(fast):.2f} |', flush=True)
    print(f'\nload average {os.getloadavg()[0]:.1f} at the end of the speed tables')

def _status() -> dict:
    "RssAnon, RssFile and VmHWM (peak RSS) of this process, in bytes."
    with open('/proc/self/status') as f:
        return {k: int(v.split()[0]) * 1024 for k, _, v in (l.partition(':') for l in f) if k in ('RssAnon', 'RssFile', 'VmHWM')}

def memory_child(mode:str, folder:str):
    "One shuffled pass over the split 'bench' of `folder`, loaded the `mode` way; prints this process's memory and times as JSON."
    from torch.utils.data import DataLoader, Dataset
    from phoalign.embeddings import load_split, EmbeddingPairs, split_files
    peak, stop, collate = dict(RssAnon=0, RssFile=0), threading.Event(), None
    def sample():
        s = _status()
        for k in peak: peak[k] = max(peak[k], s[k])
    def watch():
        while not stop.is_set(): sample(); time.sleep(0.01)
    threading.Thread(target=watch, daemon=True).start()
    t0 = time.perf_counter()
    if mode == 'seed':
        files = split_files(folder, 'bench')
        image = torch.load(files['image'], weights_only=True).float()
        text = torch.load(files['text'], weights_only=True).float()
        class SeedPairs(Dataset):
            def __len__(self): return len(image)
            def __getitem__(self, i): return dict(image=image[i], text=text[i], index=i)
        ds = SeedPairs()
    elif mode in ('mmap', 'whole'):
        ds = EmbeddingPairs(load_split(folder, 'bench', mmap=mode == 'mmap')); collate = ds.collate
    held, t1 = _status()['RssAnon'], time.perf_counter()
    if mode != 'nothing':   # 'nothing': the imports only
        for _ in DataLoader(ds, batch_size=BATCH, shuffle=True, collate_fn=collate): pass
    t2 = time.perf_counter(); stop.set(); sample()
    print(json.dumps(dict(held=held, anon=peak['RssAnon'], file=peak['RssFile'], rss=_status()['VmHWM'], load=t1 - t0, pass_=t2 - t1)))

def memory_table(a, work:Path):
    size = a.rows * (IMAGE_DIM + TEXT_DIM) * torch.empty(0, dtype=getattr(torch, a.dtype)).element_size()
    write_s, sync_s = write_split(work/'memory', a.rows, a.dtype)
    print(f'\nTable 3: peak memory of one shuffled pass (batches of {BATCH}) over {a.rows:,} rows x ({IMAGE_DIM} + {TEXT_DIM}) stored as {a.dtype} '
          f'({size / GiB:.2f} GiB); written with SplitWriter in {write_s:.1f} s ({size / GiB / write_s:.2f} GiB/s into the page cache), '
          f'fsync {sync_s:.1f} s. Each way in its own process; GiB\n')
    print('| loading | held after loading (anon) | peak anon | peak file-backed (page cache, libraries) | peak RSS (VmHWM) | load s | pass s |\n'
          '|---|---:|---:|---:|---:|---:|---:|')
    for mode, label in (('nothing', 'nothing loaded (imports only)'), ('mmap', 'mmap: load_split(mmap=True)'),
                        ('whole', 'whole: load_split(mmap=False)'), ('seed', "seed: torch.load whole, .float(), rows indexed")):
        r = subprocess.run([sys.executable, __file__, '--memory-child', mode, str(work/'memory')], capture_output=True, text=True)
        if r.returncode:
            why = 'killed (out of memory?)' if r.returncode < 0 else (r.stderr.strip().splitlines() or ['?'])[-1][:200]
            print(f'| {label} | failed: {why} | | | | | |', flush=True); continue
        m = json.loads(r.stdout.strip().splitlines()[-1])
        print(f'| {label} | {m["held"] / GiB:.2f} | {m["anon"] / GiB:.2f} | {m["file"] / GiB:.2f} | {m["rss"] / GiB:.2f} | {m["load"]:.1f} | {m["pass_"]:.1f} |', flush=True)

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    ap.add_argument('--repeats', type=int, default=3, help='timed runs per head; the median is shown')
    ap.add_argument('--steps', type=int, help='timed steps per run (default: 10 on a CPU, 100 on a GPU)')
    ap.add_argument('--warmup', type=int, help='untimed steps first (default: 3 on a CPU, 20 on a GPU)')
    ap.add_argument('--data-heads', nargs='+', default=['mlp', 'clip'], help='configs of table 2')
    ap.add_argument('--rows', type=int, default=473_000, help='rows of the split of table 3')
    ap.add_argument('--dtype', default='float16', choices=['float16', 'bfloat16', 'float32'], help='storage type of the benchmark splits')
    ap.add_argument('--workdir', default=tempfile.gettempdir(), help='a temporary folder is made in it for the splits, and deleted')
    ap.add_argument('--no-speed', action='store_true', help='skip tables 1 and 2'); ap.add_argument('--no-memory', action='store_true', help='skip table 3')
    ap.add_argument('--memory-child', nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.memory_child: return memory_child(*a.memory_child)
    device = torch.device(a.device)
    gpu = device.type == 'cuda'
    a.steps, a.warmup = a.steps or (100 if gpu else 10), a.warmup if a.warmup is not None else (20 if gpu else 3)
    itemsize = torch.empty(0, dtype=getattr(torch, a.dtype)).element_size()
    need = (0 if a.no_memory else a.rows) + (0 if a.no_speed else BATCH * (a.warmup + a.steps * a.repeats + 1))
    need *= (IMAGE_DIM + TEXT_DIM) * itemsize
    free = shutil.disk_usage(a.workdir).free
    if need + GiB > free:
        sys.exit(f'{a.workdir} has {free / GiB:.1f} GiB free; the benchmark splits need {need / GiB:.1f} GiB (+1 GiB spare): '
                 'choose fewer --rows, --dtype float16 or another --workdir')
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # so that the temporary folder is deleted
    work = Path(tempfile.mkdtemp(prefix='heads_speed_', dir=a.workdir))
    try:
        print(f'torch {torch.__version__}, {device.type}' + (f' ({torch.cuda.get_device_name(device)})' if gpu else f', {torch.get_num_threads()} threads') +
              f'; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; splits in {work} ({need / GiB:.1f} GiB of {free / GiB:.0f} GiB free)')
        if not a.no_speed: speed_table(device, a); data_table(device, a, work)
        if not a.no_memory: memory_table(a, work)
    finally: shutil.rmtree(work, ignore_errors=True)

if __name__ == '__main__': main()
