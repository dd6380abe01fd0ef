"""Composed-retrieval speed: the combiners' training step and CIRR-size validation, phoalign against the peers' ways.

    python benchmarks/cir_speed.py               # CPU: small and medium combiner sizes, the seed's loop at the small size
    python benchmarks/cir_speed.py --full        # the seed's settings (batch 4096, projection 2560, hidden 5120, features 640): a GPU
    python benchmarks/cir_speed.py --sizes 256,128,256,64 --seed-loop-max-batch 256 --no-metrics

Table 1, forward + backward (fp32; `--optimizer-step` adds CLIP4Cir's Adam step) of a batch of random features, in
training mode (dropout on), the loss CLIP4Cir's cross-entropy over the logits × 100:
- `Combiner`: CLIP4Cir's plain combiner (phoalign.cir.Combiner, which loads CLIP4Cir's weights and reproduces its outputs);
- `MoECombiner`: the CLIP4Cir-MoE design with phoalign's batched expert dispatch (rows sorted by expert, one matmul each);
- seed loop: the same MoECombiner with the seed's dispatch (a Python loop over the samples and the chosen experts);
the ratio column is the time over the plain Combiner's at the same sizes, measured in the same run. The seed's loop runs
only at the batches up to `--seed-loop-max-batch` (on a CPU it takes seconds even at a batch of 512); its row shows the
batch it ran, nothing is extrapolated.

Table 2, CIRR validation metrics (R@1/5/10/50 and subset R@1/2/3) of 4,181 queries against 2,297 images (CIRR val) and
against 20,000: `phoalign.cir.metrics.cirr_recalls` (ranks from score comparisons, names as integer ids) against
CLIP4Cir's method re-implemented here from its description (argsort of the distances, an array of names indexed by the
sorted indices, the reference removed with a string mask, labels and the group mask by string comparison); the latter
only up to `--peer-max-index` images (2,297 by default: its [Q, N] string arrays take ~5 GB and its group mask more at
20,000). Both give the same numbers (checked).

Table 3, the training loops (`--loop`): seconds per epoch of stage 1 (`finetune`, tiny towers on the synthetic CIRR
shapes) and of stage 2 (`train_combiner`, a MoE on the towers' cached features, the caching not timed), no validation,
no checkpoints: the difference between a run of E and one of 2E epochs, over E; what a run pays once (setting up, the
first and last drawing of the curves) is the rest, in its own column. With `--compare-with REF` the same epochs run on phoalign as it was at git REF (a temporary worktree) and
the table gains the ratio, measured in the same run.

For scale, on one H100 in fp32: CLIP4Cir's Combiner trains a batch of 4,096 in 33 ms; the seed's MoE combiner 6.7 s;
CLIP4Cir's CIRR metric code takes 2.0 s for 4,181 × 2,297.
"""
import argparse, json, statistics, sys, tempfile, time
from pathlib import Path
import numpy as np, torch, torch.nn.functional as F
from phoalign.cir.combiners import create_combiner
from phoalign.testing import per_sample_moe
from phoalign.cir.metrics import cirr_recalls

def timed(fn, device, repeats:int, warmup:int=1) -> float:
    "Median seconds of `fn()` over `repeats` calls after `warmup` calls."
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    for _ in range(warmup): fn()
    sync(); times = []
    for _ in range(repeats):
        t = time.perf_counter(); fn(); sync(); times.append(time.perf_counter() - t)
    return statistics.median(times)

def train_step(combiner, batch, features, device, optimizer_step=False):
    "Forward + backward of `combiner` on random features (CLIP4Cir's cross-entropy over logits × 100), and Adam's step if asked."
    g = torch.Generator(device='cpu').manual_seed(0)
    img, txt, tgt = (torch.randn(batch, features, generator=g).to(device) for _ in range(3))
    labels = torch.arange(batch, device=device)
    opt = torch.optim.Adam(combiner.parameters(), lr=1e-5)
    def step():
        loss = F.cross_entropy(combiner(img, txt, tgt), labels)
        opt.zero_grad(set_to_none=True); loss.backward()
        if optimizer_step: opt.step()
    return step

def combiner_table(sizes, seed_loop_max_batch, device, repeats, optimizer_step=False):
    what = 'forward + backward + Adam step' if optimizer_step else 'forward + backward'
    print(f'\n| batch | projection | hidden | features | combiner | ms ({what}) | × plain Combiner |')
    print('|---:|---:|---:|---:|---|---:|---:|')
    for batch, proj, hidden, feat in sizes:
        torch.manual_seed(0)
        plain = create_combiner('combiner', feat, projection_dim=proj, hidden_dim=hidden).to(device).train()
        moe = create_combiner('moe', feat, projection_dim=proj, hidden_dim=hidden).to(device).train()
        rows = [('Combiner (CLIP4Cir)', timed(train_step(plain, batch, feat, device, optimizer_step), device, repeats)),
                ('MoECombiner (batched)', timed(train_step(moe, batch, feat, device, optimizer_step), device, repeats))]
        if batch <= seed_loop_max_batch:
            layer = moe.moe_layer
            layer.forward = lambda x, layer=layer: per_sample_moe(layer, x)   # the seed's dispatch, same weights
            rows.append(('MoE, seed per-sample loop', timed(train_step(moe, batch, feat, device, optimizer_step), device, 1)))
        del plain, moe
        for name, s in rows:
            print(f'| {batch} | {proj} | {hidden} | {feat} | {name} | {1000 * s:.1f} | {s / rows[0][1]:.2f} |', flush=True)

def clip4cir_cirr(pred, index, names, refs, targets, groups):
    "CLIP4Cir's CIRR metric method (re-implemented from its description: string arrays throughout)."
    index = F.normalize(index, dim=-1).float()
    sorted_names = np.array(names)[torch.argsort(1 - pred @ index.T, dim=-1).cpu()]
    mask = sorted_names != np.repeat(np.array(refs), len(names)).reshape(len(targets), -1)
    sorted_names = sorted_names[mask].reshape(sorted_names.shape[0], sorted_names.shape[1] - 1)
    labels = torch.tensor(sorted_names == np.repeat(np.array(targets), len(names) - 1).reshape(len(targets), -1))
    group_mask = (sorted_names[..., None] == np.array(groups)[:, None, :]).sum(-1).astype(bool)
    group_labels = labels[group_mask].reshape(labels.shape[0], -1)
    out = {f'recall_at{k}': (torch.sum(labels[:, :k]) / len(labels)).item() * 100 for k in (1, 5, 10, 50)}
    out.update({f'recall_subset_at{k}': (torch.sum(group_labels[:, :k]) / len(group_labels)).item() * 100 for k in (1, 2, 3)})
    return out

def metrics_table(device, repeats, peer_max_index=2297, queries=4181, dim=640):
    print('\n| queries | index | method | device | s | × phoalign |')
    print('|---:|---:|---|---|---:|---:|')
    g = torch.Generator().manual_seed(0)
    for n in (2297, 20000):
        names = [f'dev-{i}-img{i % 7}' for i in range(n)]
        pred = F.normalize(torch.randn(queries, dim, generator=g), dim=-1).to(device)
        index = torch.randn(n, dim, generator=g).to(device)
        t, r = torch.randint(n, (queries,), generator=g), torch.randint(n, (queries,), generator=g)
        r = torch.where(r == t, (r + 1) % n, r)
        # CIRR's image sets: six distinct images, the reference and the target among them
        groups = [[names[a], names[b]] + [names[(b + j) % n] for j in range(1, 7) if (b + j) % n != a][:4] for a, b in zip(r.tolist(), t.tolist())]
        refs, targets = [names[i] for i in r], [names[i] for i in t]
        ours = timed(lambda: cirr_recalls(pred, index, names, refs, targets, groups), device, repeats)
        print(f'| {queries} | {n} | phoalign cirr_recalls | {device.type} | {ours:.3f} | 1.00 |', flush=True)
        if n <= peer_max_index:
            peer = timed(lambda: clip4cir_cirr(pred, index, names, refs, targets, groups), device, 1, warmup=0)
            same = clip4cir_cirr(pred, index, names, refs, targets, groups) == {k: v for k, v in cirr_recalls(pred, index, names, refs, targets, groups).items() if k != 'avg'}
            print(f'| {queries} | {n} | CLIP4Cir method{"" if same else " (DIFFERENT numbers!)"} | {device.type} | {peer:.3f} | {peer / ours:.1f} |', flush=True)

def loop_seconds(epochs:int=3, triplets:int=512, batch:int=32) -> dict:
    "Seconds per epoch of stage 1 and stage 2 on the synthetic CIRR shapes, through whichever API this phoalign has."
    import os; os.environ.setdefault('HF_HUB_OFFLINE', '1')
    import phoalign.cir.train as ct
    from phoalign.data.synthetic import make_shapes, write_cirr
    from phoalign.model import create_model
    from phoalign.cir.data import read_cirr
    work = Path(tempfile.mkdtemp())
    root = write_cirr(make_shapes(n_images=2 * triplets + 400, size=32, seed=0, n_triplets=triplets + 200), work/'shapes').parent
    train = read_cirr(root, 'train'); train.triplets = train.triplets.iloc[:triplets]
    model = create_model('tiny', 'data.image_size=32', 'model.embed_dim=64', 'model.options.text={dim: 64, layers: 1, heads: 4, max_length: 24}',
                         captions=train.triplets.caption.tolist())
    quiet = lambda *a, **k: None
    def run(stage, out, n):
        common = dict(output_dir=str(out), num_epochs=n, batch_size=batch, save_training=False)
        if hasattr(ct, 'StageSettings'):   # the API before the Trainer ran both stages
            s = ct.StageSettings(progress=False, **common)
            if stage == 1: return ct.finetune(model, train, None, s, learning_rate=1e-4, log=quiet)
            return ct.train_combiner(model, train, None, s, 'moe', projection_dim=128, hidden_dim=256, combiner_lr=1e-4, log=quiet)[1]
        if stage == 1: return ct.finetune(model, train, None, dict(common, learning_rate=1e-4), progress=False, log=quiet)
        return ct.train_combiner(model, train, None, dict(common, combiner_lr=1e-4), 'moe', projection_dim=128, hidden_dim=256, progress=False, log=quiet)[1]
    out = {}
    def timed_run(stage, folder, n):
        for f in [*folder.glob('metrics.*'), *folder.glob('*.pt')]:
            if not f.name.startswith('features_'): f.unlink()   # the folder is free for the next run; the cached features stay
        t = time.perf_counter(); run(stage, folder, n); return time.perf_counter() - t
    for stage in (1, 2):
        folder = work/f'stage{stage}'
        run(stage, folder, 1)   # warm-up, and stage 2's feature cache
        # a run of E and one of 2E epochs: their difference is E epochs of the loop, without what a run pays once (setup, first and last curves)
        short, long = timed_run(stage, folder, epochs), timed_run(stage, folder, 2 * epochs)
        out[f'stage{stage}'] = (long - short) / epochs
        out[f'stage{stage}_once'] = max(0.0, short - epochs * out[f'stage{stage}'])
    return out

def loop_table(compare_with=None, epochs:int=3):
    before = {}
    if compare_with:
        sys.path.insert(0, str(Path(__file__).parent))
        from side_by_side import previous_results
        before = previous_results(compare_with, 'cir_speed.py', ['--loop-only', '--loop-epochs', str(epochs)])
    now = loop_seconds(epochs)
    print(f'\n| stage | s per epoch (this tree) | s once a run (this tree) |' + (f' s per epoch ({compare_with}) | s once a run ({compare_with}) | × per epoch |' if before else '') +
          '\n|---|---:|---:|' + ('---:|---:|---:|' if before else ''))
    for k in ('stage1', 'stage2'):
        print(f'| {k} | {now[k]:.3f} | {now[k + "_once"]:.2f} |' + (f' {before[k]:.3f} | {before[k + "_once"]:.2f} | {now[k] / before[k]:.2f} |' if before else ''), flush=True)

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--full', action='store_true', help="the seed's settings (batch 4096, 2560, 5120, 640), the seed's loop at batch 4096 too")
    ap.add_argument('--sizes', nargs='+', metavar='B,P,H,F', help='combiner sizes: batch,projection,hidden,features (default: 512,256,512,64 1024,640,1280,160)')
    ap.add_argument('--seed-loop-max-batch', type=int, help="largest batch the seed's per-sample loop runs at (default: 512; 4096 with --full)")
    ap.add_argument('--optimizer-step', action='store_true', help="time Adam's step too")
    ap.add_argument('--peer-max-index', type=int, default=2297, help="largest index CLIP4Cir's metric method runs on (string arrays: ~5 GB at 20,000)")
    ap.add_argument('--no-metrics', action='store_true', help='skip table 2')
    ap.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--loop', action='store_true', help='table 3: seconds per epoch of the two stages\' training loops')
    ap.add_argument('--loop-only', action='store_true', help='table 3 alone')
    ap.add_argument('--loop-epochs', type=int, default=3, help='timed epochs per stage in table 3')
    ap.add_argument('--compare-with', default=None, metavar='REF', help='table 3 also on phoalign at this git commit, side by side')
    ap.add_argument('--json-out', default=None, help=argparse.SUPPRESS)   # used by --compare-with
    args = ap.parse_args()
    if args.json_out: Path(args.json_out).write_text(json.dumps(loop_seconds(args.loop_epochs))); sys.exit(0)
    if args.loop_only: loop_table(args.compare_with, args.loop_epochs); sys.exit(0)
    device = torch.device(args.device)
    print(f'torch {torch.__version__}, {device.type}' + (f' ({torch.cuda.get_device_name()})' if device.type == 'cuda' else f', {torch.get_num_threads()} threads'))
    if args.sizes: sizes = [tuple(int(v) for v in s.split(',')) for s in args.sizes]
    elif args.full: sizes = [(4096, 2560, 5120, 640)]
    else: sizes = [(512, 256, 512, 64), (1024, 640, 1280, 160)]
    seed_max = args.seed_loop_max_batch if args.seed_loop_max_batch is not None else (4096 if args.full else 512)
    combiner_table(sizes, seed_max, device, args.repeats, args.optimizer_step)
    if not args.no_metrics: metrics_table(device, args.repeats, args.peer_max_index)
    if args.loop or args.compare_with: loop_table(args.compare_with, args.loop_epochs)
