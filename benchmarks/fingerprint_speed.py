"""`model_fingerprint` uncached (hashing a sample of every weight, as every query paid before) against cached (the hash kept
per model until a weight changes): the tiny search model and a ResNet50-sized model (torchvision's `resnet50(weights=None)`
as a stand-in tower, 25.6M parameters), one thread.

    python benchmarks/fingerprint_speed.py [--repeats 50]
"""
import argparse, os, platform, statistics, time
os.environ.setdefault('OMP_NUM_THREADS', '1')
import torch
from phoalign.encode import model_fingerprint, _WEIGHTS_HASHES

class Stand_in(torch.nn.Module):
    "An image tower with an `embed_dim`, which is all `model_fingerprint` needs beyond the weights."
    def __init__(self, tower, dim): super().__init__(); self.tower, self.embed_dim = tower, dim

def models() -> dict:
    from phoalign.model import create_model
    out = {'tiny (phoalign)': create_model('tiny', captions=['một hình tròn màu đỏ'])}
    try:
        from torchvision.models import resnet50
        out['resnet50-sized'] = Stand_in(resnet50(weights=None), 2048)
    except Exception as e: print(f'resnet50 skipped: {e}')
    return out

def ms(f, repeats:int) -> float:
    ts = []
    for _ in range(repeats): t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3

def main(repeats:int=50):
    torch.set_num_threads(1)
    print(f'{platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread, median of {repeats} calls\n')
    print(f'{"model":18s} {"params":>8s} {"uncached ms":>12s} {"cached ms":>10s} {"ratio":>8s}')
    for name, m in models().items():
        m.eval()
        def uncached(): _WEIGHTS_HASHES.pop(m, None); return model_fingerprint(m)
        fp = model_fingerprint(m)
        u, c = ms(uncached, repeats), ms(lambda: model_fingerprint(m), repeats)
        assert model_fingerprint(m) == fp == uncached()
        print(f'{name:18s} {sum(p.numel() for p in m.parameters()) / 1e6:7.1f}M {u:12.3f} {c:10.3f} {u / c:7.0f}x')

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--repeats', type=int, default=50)
    main(**vars(ap.parse_args()))
