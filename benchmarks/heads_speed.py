"""Projection heads on pre-encoded embeddings: training speed per head, and the memory of memory-mapped loading.

    python benchmarks/heads_speed.py                      # CPU: both tables, the memory one on a 473k-row set (5 GB of float16 on disk)
    python benchmarks/heads_speed.py --device cuda        # the speed table on a GPU
    python benchmarks/heads_speed.py --rows 20000         # a quick try of the memory table

Table 1, steps/s of head-only training at the pipeline's sizes (1152-d SigLIP image and 4096-d E5 text embeddings, batch
512, output 512), fp32, AdamW step included, random features already on the device (no data loading): every shipped
heads config (`phoalign/configs/heads/*.yaml`) with its loss, built as `phoalign heads train` builds it. A last row adds
the data path: the mlp head fed by `EmbeddingPairs` over a memory-mapped split through a shuffled DataLoader.

Table 2, peak memory of one shuffled pass of batches of 512 over a split of `--rows` rows × (1152 + 4096) stored as
float16 (`--dtype`), each way in its own process:
- mmap: `load_split(..., mmap=True)` and `EmbeddingPairs` (phoalign's way);
- whole: `load_split(..., mmap=False)`, the same pass;
- seed: `torch.load` of both tensors whole, then `.float()` as the pipeline's dataset holds them.
Peak RSS counts the file's pages a mapping has touched (page cache, which the kernel reclaims at will); peak anonymous
memory (RssAnon, sampled every 20 ms) is what a process really holds. The set is written with `SplitWriter` into a
temporary folder (`--workdir`) that is deleted at the end.
"""
import argparse, json, os, resource, shutil, subprocess, sys, tempfile, threading, time
from pathlib import Path

def _anon_kib() -> int:
    for line in open('/proc/self/status'):
        if line.startswith('RssAnon:'): return int(line.split()[1])
    return 0

def _speed(device:str, steps:int, warmup:int) -> list[dict]:
    import torch
    from phoalign.embeddings import read_heads_config, heads_model_config, heads_configs
    from phoalign.model import create_model
    from phoalign.losses import loss_from_config, clamp_logit_scale_
    rows = []
    for name in heads_configs():
        cfg = heads_model_config(read_heads_config(name), 1152, 4096)
        model, loss_fn = create_model(cfg).to(device).train(), loss_from_config(cfg.loss).to(device)
        opt = torch.optim.AdamW(model.param_groups(1e-4, 0.01))
        img, txt = torch.randn(512, 1152, device=device), torch.randn(512, 4096, device=device)
        takes = set(__import__('phoalign.losses', fromlist=['loss_inputs']).loss_inputs(loss_fn))
        def step():
            out = model(img, txt)
            loss = loss_fn(**{k: v for k, v in out.items() if k in takes})
            opt.zero_grad(set_to_none=True); loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step()
            if model.logit_scale is not None: clamp_logit_scale_(model.logit_scale)
            model.update_momentum()
        for _ in range(warmup): step()
        if device.startswith('cuda'): torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(steps): step()
        if device.startswith('cuda'): torch.cuda.synchronize()
        dt = time.perf_counter() - t
        rows.append(dict(head=name, loss=cfg.loss.name, params=sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6,
                         steps_per_s=steps / dt))
    return rows

def _data_path_speed(device:str, steps:int, workdir:Path) -> float:
    "Steps/s of the mlp head fed from a memory-mapped split through a shuffled DataLoader."
    import torch
    from torch.utils.data import DataLoader
    from phoalign.embeddings import _synthetic_embeddings, EmbeddingPairs, read_heads_config, heads_model_config
    from phoalign.model import create_model
    from phoalign.losses import loss_from_config
    split = _synthetic_embeddings(workdir/'speed', 'train', n_images=512 * (steps + 2) // 5, captions_per_image=5, image_dim=1152, text_dim=4096)
    cfg = heads_model_config(read_heads_config('mlp'), 1152, 4096)
    model, loss_fn = create_model(cfg).to(device).train(), loss_from_config(cfg.loss).to(device)
    opt = torch.optim.AdamW(model.param_groups(1e-4, 0.01))
    ds = EmbeddingPairs(split)
    n, t = 0, None
    for batch in DataLoader(ds, batch_size=512, shuffle=True, collate_fn=ds.collate, drop_last=True):
        if n == 2: t = time.perf_counter()
        out = model(batch['image'].to(device), batch['text'].to(device))
        loss = loss_fn(out['image_features'], out['text_features'], out['logit_scale'])
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step(); n += 1
    if device.startswith('cuda'): torch.cuda.synchronize()
    return (n - 2) / (time.perf_counter() - t)

def _memory_child(mode:str, folder:str):
    "One shuffled pass in this process; prints peak RSS and peak anonymous memory (MiB) as JSON."
    import torch
    from torch.utils.data import DataLoader
    from phoalign.embeddings import load_split, EmbeddingPairs, split_files
    peak, done = [0], threading.Event()
    def watch():
        while not done.is_set(): peak[0] = max(peak[0], _anon_kib()); time.sleep(0.02)
    threading.Thread(target=watch, daemon=True).start()
    t = time.perf_counter()
    if mode == 'seed':
        files = split_files(folder, 'bench')
        image, text = torch.load(files['image'], weights_only=True).float(), torch.load(files['text'], weights_only=True).float()
        for idx in torch.randperm(len(image)).split(512): _ = image[idx], text[idx]
    else:
        ds = EmbeddingPairs(load_split(folder, 'bench', mmap=mode == 'mmap'))
        for _ in DataLoader(ds, batch_size=512, shuffle=True, collate_fn=ds.collate): pass
    done.set(); peak[0] = max(peak[0], _anon_kib())
    print(json.dumps(dict(rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, anon=peak[0] / 1024, seconds=time.perf_counter() - t)))

def _memory(rows:int, dtype:str, workdir:Path) -> tuple[list[dict], float, float]:
    import torch
    from phoalign.embeddings import SplitWriter
    bytes_per = 2 if dtype in ('float16', 'bfloat16') else 4
    need = rows * (1152 + 4096) * bytes_per
    free = shutil.disk_usage(workdir).free
    if free < need * 1.1: sys.exit(f'{workdir}: {need / 2**30:.1f} GiB needed for {rows} rows of {dtype}, {free / 2**30:.1f} GiB free (try --rows or --workdir)')
    t = time.perf_counter()
    with SplitWriter(workdir, 'bench', rows, 1152, 4096, dtype, dtype) as w:
        g = torch.Generator().manual_seed(0)
        for s in range(0, rows, 65536):
            e = min(s + 65536, rows)
            w.image[s:e], w.text[s:e] = torch.randn(e - s, 1152, generator=g), torch.randn(e - s, 4096, generator=g)
        w.metadata = dict(image_ids=[i // 5 for i in range(rows)], caption_ids=list(range(rows)))
    write_s = time.perf_counter() - t
    out = []
    for mode in ('mmap', 'whole', 'seed'):
        r = subprocess.run([sys.executable, __file__, '--memory-child', mode, str(workdir)], capture_output=True, text=True)
        if r.returncode: sys.exit(f'{mode}: {r.stderr[-2000:]}')
        out.append(dict(mode=mode, **json.loads(r.stdout.strip().splitlines()[-1])))
    return out, write_s, need / 2**30

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--device', default='cpu'); ap.add_argument('--steps', type=int, default=20); ap.add_argument('--warmup', type=int, default=3)
    ap.add_argument('--rows', type=int, default=473_000); ap.add_argument('--dtype', default='float16', choices=['float16', 'bfloat16', 'float32'])
    ap.add_argument('--workdir', default=None); ap.add_argument('--skip-speed', action='store_true'); ap.add_argument('--skip-memory', action='store_true')
    ap.add_argument('--memory-child', nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.memory_child: return _memory_child(*a.memory_child)
    import torch
    work = Path(tempfile.mkdtemp(prefix='heads_speed_', dir=a.workdir))
    try:
        print(f'device {a.device} ({torch.get_num_threads()} CPU threads), torch {torch.__version__}\n')
        if not a.skip_speed:
            rows = _speed(a.device, a.steps, a.warmup)
            print('| head (shipped config) | loss | trainable params (M) | steps/s at batch 512 | pairs/s |\n|---|---|---:|---:|---:|')
            for r in rows: print(f'| {r["head"]} | {r["loss"]} | {r["params"]:.2f} | {r["steps_per_s"]:.2f} | {r["steps_per_s"] * 512:,.0f} |')
            print(f'| mlp, from a memory-mapped split (DataLoader, shuffled) | clip | | {_data_path_speed(a.device, a.steps, work):.2f} | |\n')
        if not a.skip_memory:
            mem, write_s, gib = _memory(a.rows, a.dtype, work)
            print(f'{a.rows:,} rows × (1152 + 4096) {a.dtype}: {gib:.2f} GiB on disk, written in chunks in {write_s:.0f} s; one shuffled pass of batches of 512\n')
            print('| loading | peak anonymous memory (GiB) | peak RSS incl. mapped file pages (GiB) | pass (s) |\n|---|---:|---:|---:|')
            for m in mem: print(f'| {m["mode"]} | {m["anon"] / 1024:.2f} | {m["rss"] / 1024:.2f} | {m["seconds"]:.0f} |')
    finally: shutil.rmtree(work, ignore_errors=True)

if __name__ == '__main__': main()
