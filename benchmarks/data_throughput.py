"""Decoded + augmented images per second per CPU core: phoalign's cv2 + albumentations `medium` preset against
torchvision's PIL pipeline doing the same operations on the same JPEG files, both on one thread.

    python benchmarks/data_throughput.py [--n 200] [--size 224] [--repeats 5]
"""
import argparse, os, platform, statistics, tempfile, time
from pathlib import Path

os.environ.setdefault('OMP_NUM_THREADS', '1')
import cv2, numpy as np, torch, torchvision
import torchvision.transforms as T
from PIL import Image
import albumentations
from phoalign.data.transforms import read_image, image_transform
from phoalign.data.synthetic import gallery_dir

def make_jpegs(n:int, out:Path) -> list[Path]:
    "n photographs of 500x375 (the common web/COCO size), from the gallery's colour photos, as quality-90 JPEGs."
    photos = [read_image(p) for p in sorted((gallery_dir()/'photos').glob('*.jpg'))]
    photos = [p for p in photos if p.std(axis=2).mean() > 5]  # colour ones
    paths = []
    for i in range(n):
        img = cv2.resize(photos[i % len(photos)], (500, 375), interpolation=cv2.INTER_CUBIC)
        if i // len(photos) % 2: img = img[:, ::-1]
        paths.append(out/f'{i:04d}.jpg'); cv2.imwrite(str(paths[-1]), np.ascontiguousarray(img[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return paths

def torchvision_medium(size:int):
    "torchvision's equivalent of phoalign's `medium` preset (same operations, probabilities and ranges)."
    return T.Compose([T.RandomResizedCrop(size, scale=(0.6, 1.0), ratio=(3/4, 4/3), antialias=True), T.RandomHorizontalFlip(),
                      T.RandomApply([T.ColorJitter(0.2, 0.2, 0.2, 0.05)], p=0.8),
                      T.RandomApply([T.RandomAffine(degrees=10, translate=(0.05, 0.05))], p=0.5),
                      T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])

def rate(fn, paths, repeats:int) -> float:
    "Median images/s over `repeats` passes, after one warm-up pass."
    for p in paths[:20]: fn(p)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for p in paths: out = fn(p)
        rates.append(len(paths) / (time.perf_counter() - t0))
    assert out.shape[-2:] == fn.size
    return statistics.median(rates)

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=200); ap.add_argument('--size', type=int, default=224); ap.add_argument('--repeats', type=int, default=5)
    a = ap.parse_args()
    cv2.setNumThreads(1); torch.set_num_threads(1)
    paths = make_jpegs(a.n, Path(tempfile.mkdtemp()))
    ours_tfm, tv_tfm = image_transform('medium', a.size, 'imagenet'), torchvision_medium(a.size)
    def ours(p): return ours_tfm(read_image(p))
    def tv(p):
        with Image.open(p) as im: return tv_tfm(im.convert('RGB'))
    for f in (ours, tv): f.size = (a.size, a.size)
    r_tv, r_ours = rate(tv, paths, a.repeats), rate(ours, paths, a.repeats)
    cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), platform.processor()) if Path('/proc/cpuinfo').exists() else platform.processor()
    print(f'{a.n} JPEGs of 500x375 -> {a.size}px, `medium` augmentation, 1 thread; median of {a.repeats} passes')
    print(f'CPU: {cpu}; torch {torch.__version__}, torchvision {torchvision.__version__}, albumentations {albumentations.__version__}, '
          f'opencv {cv2.__version__}, Pillow {Image.__version__}\n')
    print('| pipeline | images/s per core | ratio |\n|---|---:|---:|')
    print(f'| torchvision (PIL) | {r_tv:.0f} | 1.00x |')
    print(f'| phoalign (cv2 + albumentations) | {r_ours:.0f} | {r_ours / r_tv:.2f}x |')

if __name__ == '__main__': main()
