"""`phoalign data shard` and training on webdataset shards, as a user runs them: a fresh folder, relative paths."""
import json, os, subprocess, sys, tarfile
from pathlib import Path
import pytest, torch
from test_cli import phoalign

def _synth_and_shard(cwd, n=120, size=16):
    assert phoalign('data', 'synth', '--out', 'shapes', '--n', str(n), '--lang', 'vi', cwd=cwd).returncode == 0
    r = phoalign('data', 'shard', 'shapes/captions_vi.json', '--out', 'shards', '--shard-size', str(size), cwd=cwd)
    assert r.returncode == 0, r.stderr
    return r, json.loads((cwd/'shards'/'shards.json').read_text())

def test_shard_train_eval_and_read_with_webdataset(tmp_path):
    r, m = _synth_and_shard(tmp_path)
    assert r.stdout.startswith(f'{m["samples"]} samples ({m["captions"]} captions) in ') and m['samples'] == 120 and m['captions'] == 600
    assert sorted(m['splits']) == ['test', 'train', 'val'] and not (tmp_path/'shards'/'shards.partial').exists()
    wds = pytest.importorskip('webdataset')   # the shards are webdataset's: its reader decodes them as open_clip would
    first = next(iter(wds.WebDataset(str(tmp_path/'shards'/'train-00000.tar'), shardshuffle=False).decode('rgb')))
    assert first['png'].shape[2] == 3 and first['txt']   # the image file's own bytes: PNG stays png and len(first['json']['captions']) == 5
    elsewhere = tmp_path/'elsewhere'; elsewhere.mkdir()   # trained from another folder than the one they were written in
    tr = phoalign('train', 'tiny', 'data.path=../shards', 'train.epochs=1', 'train.batch_size=16', 'train.output_dir=run', '--no-progress', cwd=elsewhere)
    assert tr.returncode == 0, tr.stdout + tr.stderr
    n_train = m['splits']['train']['samples']
    assert f'train: {n_train} images' in tr.stdout and 'test split' in tr.stdout
    assert torch.load(elsewhere/'run'/'last.pt', weights_only=True)['step'] == n_train // 16   # every sample once, whole batches
    ev = phoalign('eval', 'elsewhere/run', '--data', 'shards', '--json', cwd=tmp_path)
    assert ev.returncode == 0 and json.loads(ev.stdout)['images'] == m['splits']['test']['samples'], ev.stderr
    rs = phoalign('train', 'tiny', 'data.path=shards', 'data.num_samples=48', 'train.epochs=1', 'train.batch_size=16', 'train.output_dir=resampled',
                  'train.save_checkpoints=true', '--no-progress', cwd=tmp_path)
    assert rs.returncode == 0 and torch.load(tmp_path/'resampled'/'last.pt', weights_only=True)['step'] == 3, rs.stderr   # 48 samples an epoch

def test_shard_bad_inputs_are_named(tmp_path):
    assert phoalign('data', 'synth', '--out', 'shapes', '--n', '40', '--lang', 'vi', cwd=tmp_path).returncode == 0
    img = sorted((tmp_path/'shapes'/'images').iterdir())[3]
    img.write_bytes(img.read_bytes()[:40])                                    # a truncated image
    r = phoalign('data', 'shard', 'shapes/captions_vi.json', '--out', 'shards', '--shard-size', '8', 'data.val_frac=0', 'data.test_frac=0', cwd=tmp_path)
    assert r.returncode == 0 and 'left out: 1 unreadable images' in r.stdout, r.stdout + r.stderr
    m = json.loads((tmp_path/'shards'/'shards.json').read_text())
    assert m['samples'] == 39 and m['unreadable_images'][0]['image'].endswith(img.name) and m['unreadable_images'][0]['reason']
    bad = phoalign('data', 'shard', 'shapes/captions_vi.json', '--out', 'other', '--shard-sise', '8', cwd=tmp_path)   # a typo
    assert bad.returncode == 2 and 'unrecognized arguments' in bad.stderr and not (tmp_path/'other').exists()
    again = phoalign('data', 'shard', 'shapes/captions_vi.json', '--out', 'shards', cwd=tmp_path)
    assert again.returncode == 2 and '--overwrite' in again.stderr and json.loads((tmp_path/'shards'/'shards.json').read_text()) == m
    # shards written elsewhere: a brace pattern, no split recorded; a split's fraction must be given as whole shards
    tr = phoalign('train', 'tiny', 'data.path=shards/train-{00000..00004}.tar', 'data.val_frac=0.2', 'data.test_frac=0', 'train.epochs=1',
                  'train.batch_size=8', 'train.output_dir=run', '--no-progress', cwd=tmp_path)
    assert tr.returncode == 0 and 'held out whole shards: val 1' in tr.stdout, tr.stdout + tr.stderr
    miss = phoalign('train', 'tiny', 'data.path=shards/train-{00000..00009}.tar', 'train.output_dir=run2', cwd=tmp_path)
    assert miss.returncode == 2 and '5 of 10 shards not found' in miss.stderr
    (tmp_path/'shards'/'shards.partial').write_text('')
    cut = phoalign('train', 'tiny', 'data.path=shards', 'train.output_dir=run3', cwd=tmp_path)
    assert cut.returncode == 2 and 'incomplete' in cut.stderr and 'Traceback' not in cut.stderr
    (tmp_path/'shards'/'shards.partial').unlink()
    made = phoalign('train', 'tiny', 'data.path=shards', 'data.val_frac=0.3', 'train.output_dir=run4', cwd=tmp_path)
    assert made.returncode == 2 and 'data.val_frac=0.3 (the shards were split with 0' in made.stderr, made.stderr
    vit = phoalign('train', 'tiny', 'model.image_tower=small_vit', 'data.path=shards', 'data.val_frac=0', 'data.test_frac=0', 'train.output_dir=run5',
                   cwd=tmp_path)   # one input size
    assert vit.returncode == 2 and 'data.image_size=64: the small_vit image tower takes 32x64 images only' in vit.stderr, vit.stderr
    assert 'Traceback' not in vit.stderr and not (tmp_path/'run5').exists()

@pytest.mark.slow
def test_two_process_training_on_shards(tmp_path):
    """torchrun, 2 CPU processes of batch 8 over shards: each streams its half of every global batch, and they train the model one
    process of batch 16 trains (a model without BatchNorm or dropout, whose outputs do not depend on how the batch is split)."""
    _synth_and_shard(tmp_path, n=120, size=16)
    same = ['tiny', 'model.image_tower=small_vit', 'model.options.image.img_size=64', 'model.options.image.dropout=0', 'model.options.text.dropout=0',
            'data.path=shards', 'train.epochs=2', '--no-progress']
    one = phoalign('train', *same, 'train.batch_size=16', 'train.output_dir=one', cwd=tmp_path)
    assert one.returncode == 0, one.stdout[-3000:] + one.stderr[-3000:]
    torchrun = Path(sys.executable).parent/'torchrun'
    r = subprocess.run([str(torchrun), '--nproc_per_node', '2', '-m', 'phoalign', 'train', *same, 'train.batch_size=8', 'train.output_dir=two'],
                       capture_output=True, text=True, cwd=tmp_path, timeout=600, env={**os.environ, 'HF_HUB_OFFLINE': '1', 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count('epoch 2:') == 1 and 'test split' in r.stdout, r.stdout
    ck1, ck2 = (torch.load(tmp_path/d/'last.pt', weights_only=True) for d in ('one', 'two'))
    n_train = json.loads((tmp_path/'shards'/'shards.json').read_text())['splits']['train']['samples']
    assert ck2['processes'] == 2 and ck1['step'] == ck2['step'] == 2 * (n_train // 16)   # whole global batches of 16
    left = f'{n_train % 16} of {n_train} training samples an epoch wait for another epoch'
    assert left in one.stdout and r.stdout.count(left) == 1, r.stdout
    rows = [[json.loads(l) for l in (tmp_path/d/'metrics.jsonl').read_text().splitlines()][:2] for d in ('one', 'two')]
    for a, b in zip(*rows): assert abs(a['train_loss'] - b['train_loss']) <= 1e-5 * a['train_loss'], rows
    for k, v in ck1['state_dict'].items():   # Adam can move a weight whose gradient is ~0 by up to the learning rate (sums in another order)
        if torch.is_tensor(v) and v.is_floating_point():
            torch.testing.assert_close(ck2['state_dict'][k], v, rtol=2e-3, atol=2e-3)
            assert ((ck2['state_dict'][k] - v).abs() > 1e-4).float().mean() < 0.02, k
