"""`phoalign cifar` as a user runs it: CIFAR-format pickles and a toy CLIP text model in a fresh folder, relative paths, a
JSON config in the seed's words, the seed's flags; two processes against one; broken files and typos."""
import json, os, pickle, shlex, subprocess, sys, time
from pathlib import Path
import pytest, torch
from test_cli_data import phoalign
from test_cli_search import assert_refused

CONFIG = {'model': {'num_layers': 1, 'num_heads': 4, 'options': {'text': {'name_or_path': 'toy-clip'}, 'image': {'embed_dim': 64, 'dropout': 0.0}}},
          'training': {'num_epochs': 2, 'batch_size': 32, 'learning_rate': 1e-3, 'warmup_steps': 0, 'output_dir': 'run'},
          'data': {'data_root': 'data', 'train_samples': 192, 'test_samples': 64}}

@pytest.fixture(scope='module')
def work(tmp_path_factory):
    "A fresh folder: data/cifar-100-python (tiny, in CIFAR's layout), toy-clip/ (a CLIP text model) and cfg.json."
    from phoalign.cifar import write_synthetic_cifar100, write_toy_clip_text
    root = tmp_path_factory.mktemp('cifar')
    write_synthetic_cifar100(root/'data', n_train=256, n_test=64, n_classes=10)
    write_toy_clip_text(root/'toy-clip')
    (root/'cfg.json').write_text(json.dumps(CONFIG), encoding='utf-8')
    return root

@pytest.mark.slow
def test_train_then_eval(work):
    r = phoalign('cifar', 'train', '--config', 'cfg.json', '--no-plotting', '--no-progress', '--different_class_prob', '0.8', cwd=work)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert 'epoch 2:' in r.stdout and '10000 candidate captions' in r.stdout, r.stdout
    results = json.loads((work/'run'/'evaluation_results.json').read_text())
    assert {'top1', 'top10', 'top100', 'left_class', 'right_class', 'chance_top1', 'history', 'config'} <= set(results)
    assert results['config']['data']['different_class_prob'] == 0.8 and results['images'] == 64
    assert not (work/'run'/'curves.png').exists()
    r = phoalign('cifar', 'eval', 'run', '--data-dir', 'data', '--test-samples', '64', '--json', cwd=work)
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m['top10'] == results['top10'] and m['candidates'] == 10000
    r = phoalign('cifar', 'train', '--config', 'cfg.json', '--eval-only', '--resume', 'run/best.pt', cwd=work)
    assert r.returncode == 0 and 'top-100' in r.stdout, r.stdout + r.stderr
    again = phoalign('cifar', 'train', '--config', 'cfg.json', cwd=work)          # the run folder is in use
    assert again.returncode == 2 and '--resume' in again.stderr

def test_errors(work, tmp_path):
    assert_refused([(['--config', 'nope.json'], 'nope.json does not exist'), (['training.epoch=1'], "did you mean 'epochs'"),
                    (['data.different_class_prob=3'], 'different_class_prob=3'), (['--data-dir', 'nowhere'], 'nowhere does not exist'),
                    (['--resume', 'last', '--overwrite'], 'contradict')], work, 'cifar', 'train', '--config', 'cfg.json')
    (tmp_path/'bad.json').write_text(json.dumps({'training': {'num_epoch': 2}}))
    assert_refused([(['--config', str(tmp_path/'bad.json')], "unknown key 'num_epoch'")], work, 'cifar', 'train')
    (tmp_path/'broken.json').write_text('{"training": ')
    assert_refused([(['--config', str(tmp_path/'broken.json')], 'broken.json: not valid JSON')], work, 'cifar', 'train')
    bad = tmp_path/'cifar'/'cifar-100-python'; bad.mkdir(parents=True)
    (bad/'train').write_bytes((work/'data'/'cifar-100-python'/'train').read_bytes())
    assert_refused([(['--data-dir', str(tmp_path/'cifar')], "no 'meta' file")], work, 'cifar', 'train', '--config', 'cfg.json')
    (bad/'meta').write_bytes((work/'data'/'cifar-100-python'/'meta').read_bytes())
    assert_refused([(['--data-dir', str(tmp_path/'cifar')], "no 'test' file")], work, 'cifar', 'train', '--config', 'cfg.json')   # both splits, before the run
    (bad/'test').write_bytes((work/'data'/'cifar-100-python'/'test').read_bytes())
    d = pickle.load(open(bad/'train', 'rb'), encoding='bytes'); d[b'fine_labels'][7] = 100
    pickle.dump(d, open(bad/'train', 'wb'), protocol=2)
    assert_refused([(['--data-dir', str(tmp_path/'cifar')], 'train (row 7): 1 fine labels outside 0..99')], work, 'cifar', 'train', '--config', 'cfg.json')
    assert_refused([([str(tmp_path/'none.pt'), '--data-dir', 'data'], 'none.pt does not exist')], work, 'cifar', 'eval')

@pytest.mark.slow
def test_two_processes_match_one(work):
    "torchrun with 2 CPU processes of 16 pairs trains the same model as one process of 32 (the same global batch)."
    over = ['--no-plotting', '--no-progress', 'training.epochs=1']
    one = phoalign('cifar', 'train', '--config', 'cfg.json', 'training.output_dir=one', *over, cwd=work)
    assert one.returncode == 0, one.stdout[-2000:] + one.stderr[-2000:]
    torchrun = Path(sys.executable).parent/'torchrun'
    two = subprocess.run([str(torchrun), '--nproc_per_node', '2', '-m', 'phoalign', 'cifar', 'train', '--config', 'cfg.json', 'training.output_dir=two',
                          'training.batch_size=16', *over], capture_output=True, text=True, cwd=work, timeout=600,
                         env={**os.environ, 'HF_HUB_OFFLINE': '1', 'OMP_NUM_THREADS': '1'})
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    assert two.stdout.count('epoch 1:') == 1, two.stdout
    rows = [[json.loads(l) for l in (work/d/'metrics.jsonl').read_text().splitlines()] for d in ('one', 'two')]
    assert abs(rows[0][0]['train_loss'] - rows[1][0]['train_loss']) <= 1e-4 * abs(rows[0][0]['train_loss']), rows
    w1, w2 = (torch.load(work/d/'last.pt', weights_only=True) for d in ('one', 'two'))
    assert w2['processes'] == 2
    # gradients summed in another order differ in the last bits, which Adam's step (each gradient over its own size) can turn
    # into up to a learning rate (1e-3) where a gradient is ~0: a few weights may move that much, nearly all agree to 1e-4
    for k, v in w1['state_dict'].items():
        if not torch.is_tensor(v) or not v.is_floating_point(): continue
        torch.testing.assert_close(w2['state_dict'][k], v, rtol=1e-3, atol=1e-3)
        assert ((w2['state_dict'][k] - v).abs() > 1e-4).float().mean() < 0.02, k

@pytest.mark.slow
def test_synth_then_quick_train_offline(tmp_path):
    "The first hour: phoalign data synth --cifar writes the data and a toy text model, and the command it prints trains offline (one epoch here)."
    r = phoalign('data', 'synth', '--cifar', 'data', '--n', '200', cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert '200 training and 40 test images' in r.stdout and '-> data/cifar-100-python' in r.stdout and '-> data/toy-clip' in r.stdout, r.stdout
    from phoalign.cifar import read_cifar100
    train = read_cifar100(tmp_path/'data', 'train')
    assert len(train) == 200 and sorted(set(train.labels.tolist())) == list(range(100))   # two per class
    command = shlex.split(r.stdout.split('next: ')[1].splitlines()[0])
    assert command[:4] == ['phoalign', 'cifar', 'train', '--quick'], command
    t = phoalign(*command[1:], 'train.epochs=1', '--no-progress', '--no-plotting', cwd=tmp_path)
    assert t.returncode == 0, t.stdout[-3000:] + t.stderr[-3000:]
    # 200 images in batches of 128 are 2 optimiser steps: cifar-vit-quick's 100-step warmup is capped at a tenth of them
    assert "warmup 0 steps instead of 100: at most a tenth of this run's 2 optimiser steps" in t.stdout, t.stdout
    assert 'test pairs (40, 10000 candidate captions)' in t.stdout, t.stdout
    again = phoalign('data', 'synth', '--cifar', 'data', '--n', '100', cwd=tmp_path)   # its own files may be replaced
    assert again.returncode == 0 and len(read_cifar100(tmp_path/'data', 'train')) == 100, again.stderr

@pytest.mark.slow
def test_missing_data_and_text_model_named_before_any_model_loads(tmp_path):
    t0 = time.time()
    r = phoalign('cifar', 'train', '--data-dir', 'data', cwd=tmp_path)   # nothing here: the default text model (the Hub's) is not even looked for
    assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr
    assert r.stderr.startswith('phoalign: error: CIFAR-100 folder data does not exist') and r.stderr.count('\n') == 1, r.stderr
    assert 'phoalign data synth --cifar data' in r.stderr and time.time() - t0 < 60
    from phoalign.cifar import write_synthetic_cifar100
    write_synthetic_cifar100(tmp_path/'data', 20, 10)
    r = phoalign('cifar', 'train', '--data-dir', 'data', 'model.options.text.name_or_path=data/toy-clip', cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == ('phoalign: error: text model folder data/toy-clip does not exist (model.options.text.name_or_path); '
                                                      'phoalign data synth --cifar DIR writes a toy CLIP text model in DIR/toy-clip'), r.stderr
    r = phoalign('cifar', 'train', '--data-dir', 'data', 'model.options.text.name_or_path=nobody/no-such-clip', cwd=tmp_path)   # HF_HUB_OFFLINE=1 here
    assert r.returncode == 2 and 'nobody/no-such-clip is not in the Hugging Face cache' in r.stderr, r.stderr
    r = phoalign('cifar', 'eval', 'run', '--data-dir', 'elsewhere', cwd=tmp_path)   # the data is checked before the checkpoint is read
    assert r.returncode == 2 and 'CIFAR-100 folder elsewhere does not exist' in r.stderr, r.stderr
