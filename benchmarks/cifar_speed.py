"""Paired-CIFAR training speed: phoalign's `Trainer` against a bare PyTorch loop on the same model and data, fp32.

    python benchmarks/cifar_speed.py                                  # CPU: the cifar-vit preset, a toy CLIP text model (offline)
    python benchmarks/cifar_speed.py --text-model openai/clip-vit-base-patch32   # the real frozen CLIP text tower (downloads it)
    python benchmarks/cifar_speed.py --images 512 --repeats 1 --depth 2          # smoke test

Every row trains the `cifar-vit` preset as shipped (a small ViT from scratch on 3x32x64 pairs, 6 blocks of 256, plus a frozen
CLIP text tower; `--depth` / `--embed-dim` change the ViT) on tiny CIFAR-format pickles written to a temporary folder, read
through `read_cifar_config` and `cifar_datasets` (the training `PairedCIFAR`, augmentation on, as `train_cifar` uses it):
- phoalign Trainer: `Trainer(model, train, None, config=cfg).fit(1)` (Accelerate, loss checks, clipping, schedule, logging);
- bare PyTorch loop: the same `PairedCIFAR` in a `DataLoader(collate_fn=PairsCollate(model.tokenize))`, AdamW over the
  trainable parameters, `ClipLoss` with the model's logit scale, backward, gradient clipping at 1.0, step;
- bare model step only: the bare loop's step repeated on one pre-made batch (no data loading);
- data loading only: the bare loop's DataLoader iterated with no model (decoding, pairing, augmentation, tokenization).
images/s counts paired images (one 3x32x64 input each). Each run's clock starts when its `--warmup` batches have finished and
stops after its last batch, so loader start-up, warm-up and the Trainer's end-of-epoch checkpoint writes are not timed. The
rows run one after the other in each of `--repeats` rounds; the table gives the median, and the ratio column divides by the
bare loop's median measured in the same run. Nothing is extrapolated.
"""
import argparse, os, shutil, statistics, sys, tempfile, time
from pathlib import Path
T0 = time.perf_counter()

def parse():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--images', type=int, default=2048, help='timed training images per run (rounded down to whole batches)')
    ap.add_argument('--batch', type=int, default=64)
    ap.add_argument('--warmup', type=int, default=2, help='untimed batches at the start of each run (at least 1)')
    ap.add_argument('--repeats', type=int, default=3, help='rounds of all rows; the median is shown')
    ap.add_argument('--text-model', default='toy', help="'toy' (a 2-layer CLIP text model built here), openai/clip-vit-base-patch32 (the preset's) or a local CLIP text model folder")
    ap.add_argument('--depth', type=int, help='ViT blocks (preset: 6)')
    ap.add_argument('--embed-dim', type=int, help='ViT width (preset: 256)')
    ap.add_argument('--workers', type=int, default=0, help='DataLoader workers (data.num_workers; preset: 0)')
    ap.add_argument('--device', default=None, help='cpu or cuda (default: cuda when available)')
    return ap.parse_args()

a = parse()
if a.text_model == 'toy': os.environ.setdefault('HF_HUB_OFFLINE', '1')
import torch
from torch.utils.data import DataLoader
from phoalign.cifar import write_synthetic_cifar100, CIFAR100_CLASSES, CAPTION_TEMPLATE, read_cifar_config, cifar_datasets
from phoalign.data.datasets import PairsCollate
from phoalign.losses import ClipLoss
from phoalign.model import create_model
from phoalign.text import build_tiny_clip_text
from phoalign.train import Trainer
import transformers; transformers.utils.logging.disable_progress_bar()   # no 'Loading weights' bar per model

device = torch.device(a.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
assert a.warmup >= 1, '--warmup must be at least 1 (the clock starts at the end of the last warm-up batch)'

def rate(stamps:list, batch:int) -> float:
    "images/s between the end of the last warm-up batch and the end of the last batch."
    return (len(stamps) - a.warmup) * batch / (stamps[-1] - stamps[a.warmup - 1])

def trainer_run(cc, cfg) -> float:
    model = create_model(cfg)
    train, _ = cifar_datasets(cc, model)
    tr = Trainer(model, train, None, config=cfg, live=False, progress=False, overwrite=True, log=lambda s: None)
    stamps, step = [], tr.train_step
    def stamped(batch):
        out = step(batch); sync(); stamps.append(time.perf_counter()); return out
    tr.train_step = stamped
    tr.fit(1)
    return rate(stamps, cfg.train.batch_size)

def bare_setup(cc, cfg):
    "The model, the loader and one step of the bare loop."
    model = create_model(cfg).to(device).train()
    train, _ = cifar_datasets(cc, model)
    loader = DataLoader(train, batch_size=cfg.train.batch_size, shuffle=True, drop_last=True,
                        collate_fn=PairsCollate(model.tokenize), num_workers=cc.data.num_workers)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    loss_fn = ClipLoss()
    def step(batch):
        out = model(batch['image'].to(device), {k: v.to(device) for k, v in batch['text'].items()})
        loss = loss_fn(out['image_features'], out['text_features'], out['logit_scale'])
        opt.zero_grad(set_to_none=True); loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step()
        sync(); return loss
    return model, loader, step

def bare_run(cc, cfg) -> float:
    _, loader, step = bare_setup(cc, cfg)
    stamps = []
    for batch in loader: step(batch); stamps.append(time.perf_counter())
    return rate(stamps, cfg.train.batch_size)

def step_only_run(cc, cfg, n_batches:int) -> float:
    _, loader, step = bare_setup(cc, cfg)
    batch, stamps = next(iter(loader)), []
    for _ in range(n_batches): step(batch); stamps.append(time.perf_counter())
    return rate(stamps, cfg.train.batch_size)

def data_only_run(cc, cfg) -> float:
    _, loader, _ = bare_setup(cc, cfg)
    stamps = []
    for batch in loader: stamps.append(time.perf_counter())
    return rate(stamps, cfg.train.batch_size)

def main():
    n_batches = a.images // a.batch + a.warmup
    n_train = n_batches * a.batch
    work = Path(tempfile.mkdtemp(prefix='cifar_speed_'))
    try:
        write_synthetic_cifar100(work/'data', n_train=n_train, n_test=a.batch, n_classes=len(CIFAR100_CLASSES), seed=0)
        text = a.text_model
        if text == 'toy':
            text = str(build_tiny_clip_text(work/'toy-clip', [CAPTION_TEMPLATE.format(left=c, right=c) for c in CIFAR100_CLASSES], projection_dim=512))
        over = [f'training.batch_size={a.batch}', 'training.epochs=1', 'training.precision=no', f'training.device={device.type}',
                f'training.output_dir={work/"run"}', f'data.train_samples={n_train}', f'data.num_workers={a.workers}']
        if a.depth: over.append(f'model.options.image.depth={a.depth}')
        if a.embed_dim: over.append(f'model.options.image.embed_dim={a.embed_dim}')
        # the preset's clip-text tower is openai/clip-vit-base-patch32; a folder goes in name_or_path (a hub name there is read as a tower name)
        model = {} if text == 'openai/clip-vit-base-patch32' else {'model': {'options': {'text': {'name_or_path': text}}}}
        cc, cfg = read_cifar_config({**model, 'data': {'data_dir': str(work/'data')}}, *over)

        m = create_model(cfg)
        vit = cc.model['options']['image']
        trainable = sum(p.numel() for p in m.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in m.parameters() if not p.requires_grad)
        name = torch.cuda.get_device_name() if device.type == 'cuda' else f'CPU, {torch.get_num_threads()} threads'
        print(f'{name}; torch {torch.__version__}; Python {sys.version.split()[0]}; fp32')
        print(f'model: cifar-vit preset, small_vit depth {vit.get("depth", 6)} width {vit.get("embed_dim", 256)} on 3x32x64 '
              f'({trainable / 1e6:.2f} M trainable), text tower {a.text_model} ({frozen / 1e6:.2f} M frozen)')
        print(f'batch {a.batch}; {n_batches - a.warmup} timed batches ({(n_batches - a.warmup) * a.batch} paired images) after {a.warmup} '
              f'warm-up per run; DataLoader workers {a.workers}; median of {a.repeats}\n', flush=True)
        del m

        rows = {'phoalign Trainer (fit, 1 epoch)': lambda: trainer_run(cc, cfg), 'bare PyTorch loop': lambda: bare_run(cc, cfg),
                'bare model step only (one pre-made batch)': lambda: step_only_run(cc, cfg, n_batches),
                'data loading only (PairedCIFAR + PairsCollate)': lambda: data_only_run(cc, cfg)}
        got = {k: [] for k in rows}
        for r in range(a.repeats):
            for k, fn in rows.items(): got[k].append(fn())
            print(f'round {r + 1}: ' + ', '.join(f'{v[-1]:.0f}' for v in got.values()) + ' images/s', flush=True)

        bare = statistics.median(got['bare PyTorch loop'])
        print('\n| what is timed | images/s | ms / batch | range over repeats | × bare loop |\n|---|---:|---:|---:|---:|')
        for k, v in got.items():
            med = statistics.median(v)
            print(f'| {k} | {med:.0f} | {1000 * a.batch / med:.1f} | {min(v):.0f}–{max(v):.0f} | {med / bare:.3f} |')
        tr = statistics.median(got['phoalign Trainer (fit, 1 epoch)'])
        print(f'\nTrainer / bare loop: {tr / bare:.3f} (images/s ratio; above 1: the Trainer is faster)')
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f'wall time {time.perf_counter() - T0:.0f} s (imports, data, all rounds)')

if __name__ == '__main__': main()
