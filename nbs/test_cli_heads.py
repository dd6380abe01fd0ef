"""Projection heads on pre-encoded embeddings as a user runs them: `encode-pairs` on the bundled photos, `split-embeddings`,
`heads train` / `heads eval` and `tune` in a fresh folder with relative paths; two processes against one; an interrupted
study resumed; broken files and typos."""
import json, os, shutil, signal, subprocess, sys, time
from pathlib import Path
import pytest, torch
from test_cli_data import phoalign, gallery
from test_cli_search import run_main, assert_refused, gallery_and_model

HEADS_YAML = '''experiment_name: small
data: {dir: emb}
model: {type: mlp, output_dim: 16, hidden_dim: 32, dropout: 0.0}
training: {batch_size: 16, learning_rate: 3.0e-3, num_epochs: 3, patience: 0}
evaluation: {visualization_samples: 20}
'''

@pytest.fixture(scope='module')
def work(tmp_path_factory):
    "A fresh folder: a copy of the bundled photos and captions, a tiny checkpoint (the image encoder), their embeddings cut into splits."
    root = gallery_and_model(tmp_path_factory.mktemp('heads'))
    r = phoalign('encode-pairs', 'gallery/captions_en.json', '--image-encoder', 'model.pt', '--text-encoder', 'all-MiniLM-L6-v2',
                 '--out', 'emb', '--split', 'all2017', '--no-progress', cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'all2017: ' in r.stdout and 'text 384-d' in r.stdout, r.stdout
    r = phoalign('split-embeddings', 'emb', '--val-images', '4', '--test-images', '4', cwd=root)
    assert r.returncode == 0 and 'train_tuning' in r.stdout, r.stdout + r.stderr
    r = phoalign('split-embeddings', '--help', cwd=root)
    assert 'default: 1000' in ' '.join(r.stdout.split()) and '5000' not in r.stdout, r.stdout   # the pipeline's held-out images
    (root/'heads.yaml').write_text(HEADS_YAML, encoding='utf-8')
    return root

@pytest.mark.slow
def test_encode_split_train_eval(work):
    meta = json.loads((work/'emb'/'all2017_metadata.json').read_text(encoding='utf-8'))
    assert len(meta['image_ids']) == len(meta['caption_ids']) == len(meta['captions']) > 29 and len(set(meta['image_ids'])) == 29
    assert meta['encoders'] == {'image': 'model.pt', 'text': 'all-MiniLM-L6-v2'}
    ids = {s: set(json.loads((work/'emb'/f'{s}_metadata.json').read_text())['image_ids']) for s in ('train', 'val', 'test')}
    assert (len(ids['val']), len(ids['test']), len(ids['train'])) == (4, 4, 21) and not (ids['train'] & ids['val'] | ids['train'] & ids['test'])
    r = phoalign('heads', 'train', 'heads.yaml', '--no-progress', cwd=work)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'epoch 3:' in r.stdout and 'test split (4 images' in r.stdout and ', val loss ' in r.stdout, r.stdout
    run = work/'results'/'small'
    for name in ('best_model.pt', 'last.pt', 'training_curves.png', 'loss_history.json', 'config.yaml',
                 'evaluation_results/metrics.json', 'evaluation_results/tsne.png', 'evaluation_results/pca.png'):
        assert (run/name).is_file(), name
    history = json.loads((run/'loss_history.json').read_text())
    assert [row['epoch'] for row in history] == [1, 2, 3] and all(row['val_loss'] > 0 for row in history), history   # the curves' validation loss
    r = phoalign('heads', 'eval', 'heads.yaml', '--json', cwd=work)
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert {'i2t_r1', 'i2t_r5', 'i2t_r10', 't2i_r1', 't2i_r5', 't2i_r10', 'rsum'} <= set(m) and (m['images'], m['split']) == (4, 'test')
    assert m['rsum'] == json.loads((run/'evaluation_results'/'metrics.json').read_text())['rsum']
    r = phoalign('heads', 'eval', 'heads.yaml', '--split', 'val', '--json', cwd=work)      # another split of the same folder
    assert r.returncode == 0 and json.loads(r.stdout)['split'] == 'val', r.stderr

@pytest.mark.slow   # it reads the heads test_encode_split_train_eval trained
def test_heads_errors(work, tmp_path):
    assert_refused([(['model.hiden_dim=3'], "did you mean 'hidden_dim'"), (['data.train=trian'], "'trian' split is incomplete"),
                    (['loss.type=sigmoid'], "loss.type 'sigmoid' is not a loss"), (['model={type: blip, output_dim: 16, momentum: 2}', 'loss.type=blip'], 'momentum must be in [0, 1)'),
                    (['--resume', 'last', '--overwrite'], 'contradict'), (['data.dir=nowhere'], 'nowhere does not exist')],
                   work, 'heads', 'train', 'heads.yaml', 'experiment_name=errors')
    assert_refused([([], 'train the heads first')], work, 'heads', 'eval', 'heads.yaml', 'experiment_name=never')
    assert_refused([([], 'heads config nothere.yaml does not exist')], work, 'heads', 'train', 'nothere.yaml')
    # broken files: a copy of the embeddings folder, damaged
    shutil.copytree(work/'emb', tmp_path/'emb')
    meta = tmp_path/'emb'/'val_metadata.json'
    m = json.loads(meta.read_text()); m['image_ids'] = m['image_ids'][:-1]; meta.write_text(json.dumps(m))
    assert_refused([([], f'val_metadata.json: "image_ids" lists {len(m["image_ids"])} entries for the {len(m["image_ids"]) + 1} embedding rows')],
                   work, 'heads', 'train', 'heads.yaml', f'data.dir={tmp_path/"emb"}', 'experiment_name=broken')
    (tmp_path/'emb'/'test_text_embeddings.pt').write_bytes(b'\x00' * 10)
    assert_refused([([], 'test_text_embeddings.pt: not a tensor file')], work, 'heads', 'eval', 'heads.yaml', f'data.dir={tmp_path/"emb"}')
    assert_refused([(['--image-encoder', 'resnet_18', '--text-encoder', 'all-MiniLM-L6-v2', '--out', str(tmp_path/'x')], "image encoder 'resnet_18'"),
                    (['--image-encoder', 'model.pt', '--text-encoder', 'all-MiniLM-L6-v2', '--out', 'emb', '--split', 'all2017'], 'already holds'),
                    (['--image-encoder', 'model.pt', '--text-encoder', 'all-MiniLM-L6-v2', '--dtype', 'float64'], 'invalid choice')],
                   work, 'encode-pairs', 'gallery/captions_en.json')
    assert_refused([(['--val-images', '20', '--test-images', '20', '--overwrite'], 'leave none of the 29 images'),
                    ([], 'already holds train, val, test, train_tuning'), (['--source', 'train'], "named 'train'")], work, 'split-embeddings', 'emb')

def _synthetic(folder: Path):
    from phoalign.embeddings import split_embeddings
    from phoalign.testing import write_synthetic_embeddings
    write_synthetic_embeddings(folder/'emb', 'all', n_images=120, captions_per_image=3, image_dim=24, text_dim=32)
    split_embeddings(folder/'emb', val_images=20, test_images=20, tuning_samples=120, log=None)
    (folder/'heads.yaml').write_text(HEADS_YAML.replace('batch_size: 16', 'batch_size: 32'), encoding='utf-8')

@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    "torchrun with 2 CPU processes of 16 pairs trains the same heads as one process of 32 (the same global batch)."
    _synthetic(tmp_path)
    one = phoalign('heads', 'train', 'heads.yaml', 'output_dir=one', '--no-progress', '--no-eval', cwd=tmp_path)
    assert one.returncode == 0, one.stdout + one.stderr
    torchrun = Path(sys.executable).parent/'torchrun'
    two = subprocess.run([str(torchrun), '--nproc_per_node', '2', '-m', 'phoalign', 'heads', 'train', 'heads.yaml', 'output_dir=two',
                          'training.batch_size=16', '--no-progress', '--no-eval'], capture_output=True, text=True, cwd=tmp_path, timeout=600,
                         env={**os.environ, 'HF_HUB_OFFLINE': '1', 'OMP_NUM_THREADS': '1'})
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    assert two.stdout.count('epoch 3:') == 1, two.stdout
    h1, h2 = (json.loads((tmp_path/d/'small'/'loss_history.json').read_text()) for d in ('one', 'two'))
    assert [r['epoch'] for r in h2] == [1, 2, 3]
    for a, b in zip(h1, h2):
        assert abs(a['train_loss'] - b['train_loss']) <= 1e-4 * abs(a['train_loss']), (a, b)
        assert abs(a['val_rsum'] - b['val_rsum']) < 1e-6, (a, b)
    w1, w2 = (torch.load(tmp_path/d/'small'/'best_model.pt', weights_only=True) for d in ('one', 'two'))
    assert w2['processes'] == 2
    for k, v in w1['state_dict'].items(): torch.testing.assert_close(w2['state_dict'][k], v, rtol=1e-4, atol=1e-5)

@pytest.mark.slow
def test_tune_interrupted_then_resumed(tmp_path):
    _synthetic(tmp_path)
    (tmp_path/'search.yaml').write_text('''study_name: small
n_trials: 4
base_config: heads.yaml
fixed: {training.num_epochs: 4}
pruner: {type: median, n_startup_trials: 2, n_warmup_steps: 1}
search_space:
  training.learning_rate: {type: loguniform, low: 1.0e-4, high: 1.0e-2}
  model.hidden_dim: {type: categorical, choices: [16, 32]}
''', encoding='utf-8')
    exe = shutil.which('phoalign')
    p = subprocess.Popen([exe, 'tune', 'search.yaml'], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, 'HF_HUB_OFFLINE': '1'})
    for line in p.stdout:                      # interrupt once the first trial has finished, while the second runs
        if line.startswith('trial 0:'): break
    time.sleep(1.0); p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 130 and 'run the same command again' in err, out + err
    import optuna
    from phoalign.tune import open_storage
    journal = tmp_path/'small.journal'         # beside the search file, readable and unlocked after the interrupt
    assert journal.is_file() and not list(tmp_path.glob('small.journal.lock*')) and not (tmp_path/'small.db').exists()
    assert len(optuna.load_study(study_name='small', storage=open_storage(str(journal))).trials) >= 1
    r = phoalign('tune', 'search.yaml', cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    first = r.stdout.splitlines()[0]
    assert 'of 4 trials finished' in first and not first.split(': ')[1].startswith('0 of'), first
    assert '[I ' not in r.stdout + r.stderr and '[I ' not in out + err, r.stderr   # Optuna's own log lines stay quiet
    summary = json.loads((tmp_path/'optuna_results'/'small'/'summary.json').read_text())
    assert summary['counts'].get('complete', 0) + summary['counts'].get('pruned', 0) == 4, summary
    best = tmp_path/'optuna_results'/'small'/'best_small.yaml'
    assert best.is_file()
    r = phoalign('heads', 'train', str(best.relative_to(tmp_path)), 'training.num_epochs=1', '--no-progress', cwd=tmp_path)   # ready to train
    assert r.returncode == 0 and (tmp_path/'results'/'best_small'/'best_model.pt').is_file(), r.stdout + r.stderr
    assert_refused([(['n_trails=3'], "unknown key 'n_trails'"), (['search_space.model.num_heads={type: int, low: 1, high: 2}'], "no head of the search takes 'num_heads'")],
                   tmp_path, 'tune', 'search.yaml')
