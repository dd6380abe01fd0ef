"""Pyramid ViG throughput: a full training step (forward, backward, AdamW) and inference, images/s, bf16 autocast,
channels_last, beside the reference implementation's figures on one H100.

    python benchmarks/vig_speed.py                       # GPU: pvig_s and pvig_ti, batch 128, 224 px
    python benchmarks/vig_speed.py --compile             # with torch.compile
    python benchmarks/vig_speed.py --device cpu --batch 2 --iters 1 --warmup 1 --size 64   # smoke test
"""
import argparse, time
import torch
from phoalign.core import vision_models
import phoalign.vision.vig  # registers the variants

REFERENCE_H100 = {'pvig_s_224_gelu': (628, 1256), 'pvig_ti_224_gelu': (890, 1791)}  # (train, inference) images/s

def sync(device):
    if device.type == 'cuda': torch.cuda.synchronize()

def measure(name, a, device):
    model = vision_models.create(name, num_classes=1000).to(device).to(memory_format=torch.channels_last)
    if a.compile: model = torch.compile(model)
    x = torch.randn(a.batch, 3, a.size, a.size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (a.batch,), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    dtype = torch.bfloat16 if a.precision == 'bf16' else torch.float32
    def train_step():
        with torch.autocast(device.type, dtype=dtype, enabled=a.precision == 'bf16'):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    @torch.no_grad()
    def infer():
        with torch.autocast(device.type, dtype=dtype, enabled=a.precision == 'bf16'): model(x)
    rates = []
    for fn, mode in ((train_step, True), (infer, False)):
        model.train(mode)
        for _ in range(a.warmup): fn()
        sync(device); t0 = time.perf_counter()
        for _ in range(a.iters): fn()
        sync(device); rates.append(a.batch * a.iters / (time.perf_counter() - t0))
    return rates

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--models', nargs='+', default=['pvig_s_224_gelu', 'pvig_ti_224_gelu'])
    ap.add_argument('--batch', type=int, default=128); ap.add_argument('--size', type=int, default=224)
    ap.add_argument('--iters', type=int, default=20); ap.add_argument('--warmup', type=int, default=5)
    ap.add_argument('--precision', default='bf16', choices=['bf16', 'fp32']); ap.add_argument('--compile', action='store_true')
    ap.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    a = ap.parse_args()
    device = torch.device(a.device)
    gpu = torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'
    print(f'{gpu}; torch {torch.__version__}; batch {a.batch}, {a.size} px, {a.precision}, channels_last'
          f'{", torch.compile" if a.compile else ""}; {a.iters} timed iterations after {a.warmup} warm-up\n')
    print('| model | train img/s | inference img/s | reference H100 train / inference | ratio train / inference |')
    print('|---|---:|---:|---:|---:|')
    for name in a.models:
        train, infer = measure(name, a, device)
        ref = REFERENCE_H100.get(name)
        ratio = f'{train / ref[0]:.2f}x / {infer / ref[1]:.2f}x' if ref and device.type == 'cuda' else 'n/a'
        print(f'| {name} | {train:.0f} | {infer:.0f} | {f"{ref[0]} / {ref[1]}" if ref else "-"} | {ratio} |')

if __name__ == '__main__': main()
