"""Training throughput of the phoalign engine against a bare hand-written PyTorch loop on the same model and batches:
images/s of a full step (both towers, loss, optimiser), bf16 autocast.

    python benchmarks/train_throughput.py                        # GPU: phoclip (PhoBERT-base-sized) and vignn-clip, batch 256
    python benchmarks/train_throughput.py --device cpu --batch 4 --steps 2 --size 64 --presets vignn-clip   # smoke test
    python benchmarks/train_throughput.py ... --compare-with HEAD~1   # also the Trainer of another commit, in the same run

With `--compare-with REF` the same measurement runs on phoalign as it was at git REF (a temporary worktree), and the
table gains that Trainer's images/s and the ratio of this one to it.
"""
import argparse, json, os, sys, tempfile, time
os.environ.setdefault('HF_HUB_OFFLINE', '1')
import torch
from pathlib import Path
from torch.utils.data import Dataset
from phoalign.core import get_device
from phoalign.model import load_config, create_model
from phoalign.losses import loss_from_config, loss_inputs, clamp_logit_scale_
from phoalign.train import Trainer, cosine_with_warmup
from phoalign.text import build_tiny_phobert
from phoalign.data.synthetic import synthetic_captions

class RandomPairs(Dataset):
    "Decoded images and captions held in memory, so both loops measure the model step, not image decoding."
    def __init__(self, n, size, captions): self.x, self.c = torch.randn(n, 3, size, size), captions
    def __len__(self): return len(self.x)
    def __getitem__(self, i): return dict(image=self.x[i], caption=self.c[i % len(self.c)], image_id=str(i), index=i)

def build(preset, a, work):
    over = ['model.pretrained=false', f'train.batch_size={a.batch}', f'train.precision={a.precision}', f'train.output_dir={work}/{preset}',
            f'train.device={a.device}', 'train.epochs=1', 'train.warmup_steps=0']
    if preset == 'phoclip':  # PhoBERT-base compute (12 layers, 768 wide) with a locally built vocabulary: no download
        over.append(f'model.text_checkpoint={build_tiny_phobert(work/"phobert-base-sized", synthetic_captions(2000, "vi"), hidden_size=768, layers=12, heads=12)}')
    return load_config(preset, *over)

def engine_rate(cfg, data, a):
    model = create_model(cfg)
    tr = Trainer(model, data, None, progress=False, live=False)
    tr.save = lambda name: None  # checkpoint writes are not what is measured
    tr.train_epoch()             # warm-up epoch (kernels, allocator)
    if tr.accelerator.device.type == 'cuda': torch.cuda.synchronize()
    t0 = time.perf_counter(); tr.train_epoch()
    if tr.accelerator.device.type == 'cuda': torch.cuda.synchronize()
    return len(data) // a.batch * a.batch / (time.perf_counter() - t0)

def bare_rate(cfg, data, a):
    device = get_device(a.device)
    model = create_model(cfg).to(device).train()
    loss_fn, inputs = loss_from_config(cfg.loss), loss_inputs(cfg.loss.name)
    tc = cfg.train
    opt = torch.optim.AdamW(model.param_groups(tc.lr, tc.weight_decay, tc.lr_image, tc.lr_text, tc.lr_head))
    sched = cosine_with_warmup(opt, 0, 10_000)
    loader = torch.utils.data.DataLoader(data, batch_size=a.batch, shuffle=True, drop_last=True,
                                         collate_fn=lambda items: (torch.stack([i['image'] for i in items]), model.tokenize([i['caption'] for i in items])))
    def epoch():
        for images, text in loader:
            images, text = images.to(device, non_blocking=True), {k: v.to(device) for k, v in text.items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=a.precision == 'bf16'):
                out = model(images, text)
                loss = loss_fn(**{k: out[k] for k in inputs if k in out})
            loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip or 1e9)
            opt.step(); sched.step(); opt.zero_grad(set_to_none=True)
            if model.logit_scale is not None: clamp_logit_scale_(model.logit_scale)
    epoch()
    if device.type == 'cuda': torch.cuda.synchronize()
    t0 = time.perf_counter(); epoch()
    if device.type == 'cuda': torch.cuda.synchronize()
    return len(data) // a.batch * a.batch / (time.perf_counter() - t0)

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--presets', nargs='+', default=['phoclip', 'vignn-clip'])
    ap.add_argument('--batch', type=int, default=256); ap.add_argument('--steps', type=int, default=10)
    ap.add_argument('--size', type=int, default=224); ap.add_argument('--precision', default='bf16', choices=['bf16', 'no'])
    ap.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    ap.add_argument('--compare-with', default=None, metavar='REF', help="also measure phoalign's Trainer at this git commit, side by side")
    ap.add_argument('--json-out', default=None, help=argparse.SUPPRESS)   # used by --compare-with
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp())
    name = torch.cuda.get_device_name() if a.device.startswith('cuda') else 'CPU'
    print(f'{name}; torch {torch.__version__}; batch {a.batch}, {a.size} px, {a.precision}; {a.steps} timed steps after {a.steps} warm-up\n')
    caps = synthetic_captions(500, 'vi')
    if a.json_out:   # the other commit's side of --compare-with: the Trainer's rate only
        rates = {p: engine_rate(build(p, a, work), RandomPairs(a.batch * a.steps, a.size, caps), a) for p in a.presets}
        return Path(a.json_out).write_text(json.dumps(rates))
    before = {}
    if a.compare_with:
        sys.path.insert(0, str(Path(__file__).parent))
        from side_by_side import previous_results
        argv = [x for x in sys.argv[1:] if x not in ('--compare-with', a.compare_with)]
        before = previous_results(a.compare_with, 'train_throughput.py', argv)
    extra = f' | Trainer at {a.compare_with} img/s | × that' if before else ''
    print(f'| preset | phoalign Trainer img/s | bare PyTorch loop img/s | ratio{extra} |\n|---|---:|---:|---:' + ('|---:|---:|' if before else '|'))
    for preset in a.presets:
        cfg = build(preset, a, work)
        data = RandomPairs(a.batch * a.steps, a.size, caps)
        eng, bare = engine_rate(cfg, data, a), bare_rate(cfg, data, a)
        print(f'| {preset} | {eng:.0f} | {bare:.0f} | {eng / bare:.3f}' + (f' | {before[preset]:.0f} | {eng / before[preset]:.3f} |' if before else ' |'))
    print('\nFor scale: open_clip trains RN50 CLIP at about 1350 images/s on one H100 (batch 256, bf16).')

if __name__ == '__main__': main()
