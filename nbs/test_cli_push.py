"""`phoalign push` and models by name, run as a user runs them: a run exported with `--dry-run`, the folder used wherever a
checkpoint goes, and `hf-hub:ORG/NAME` read offline from a Hugging Face cache filled the way a download fills it."""
import hashlib, json, os, shutil, subprocess
from pathlib import Path
import pytest, torch
from test_cli_search import run_main

def phoalign(*args, cwd=None, env=None):
    exe = shutil.which('phoalign') or pytest.fail('the `phoalign` console script is not installed (pip install -e ".[dev]")')
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', **(env or {})}
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600, env={k: v for k, v in env.items() if v is not None})

def ok(r):
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout

def fill_hub_cache(folder:Path, cache:Path, repo:str) -> Path:
    "Lay `folder`'s files out in a Hugging Face cache as a download of model repo `repo` would (blobs, a snapshot of links, refs/main)."
    root, rev = cache/f'models--{repo.replace("/", "--")}', hashlib.sha1(repo.encode()).hexdigest()
    (root/'snapshots'/rev).mkdir(parents=True); (root/'blobs').mkdir(); (root/'refs').mkdir()
    for f in folder.iterdir():
        blob = root/'blobs'/hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copy(f, blob)
        (root/'snapshots'/rev/f.name).symlink_to(Path('..')/'..'/'blobs'/blob.name)
    (root/'refs'/'main').write_text(rev)
    return root/'snapshots'/rev

@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    "A folder holding synthetic pairs `s/` and a one-epoch run of the tiny preset `run/`, exported to `exported/` with --dry-run."
    d = tmp_path_factory.mktemp('push')
    ok(phoalign('data', 'synth', '--out', 's', '--n', '80', '--lang', 'en', cwd=d))
    ok(phoalign('train', 'tiny', 'data.path=s/captions_en.json', 'train.epochs=1', 'train.batch_size=16', 'train.output_dir=run', '--no-progress', cwd=d))
    out = ok(phoalign('push', 'run', '--repo', 'me/shapes', '--dry-run', 'exported', cwd=d))
    assert out.startswith('exported: model.safetensors, config.json, README.md of run/best.pt; nothing uploaded'), out
    return d

DATA = ['--data', 's/captions_en.json', '--json', '--device', 'cpu']

@pytest.fixture(scope='module')
def run_metrics(trained):
    "`phoalign eval run` (the checkpoint the folder was exported from): what every other name of the model must measure."
    return ok(phoalign('eval', 'run', *DATA, cwd=trained))

@pytest.fixture
def hub_cache(trained, tmp_path, monkeypatch):
    "A Hugging Face cache holding `exported/` as a download of `me/shapes` would; this process and the commands it starts read it, offline."
    from huggingface_hub import constants
    fill_hub_cache(trained/'exported', tmp_path/'hub', 'me/shapes')
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(tmp_path/'hub')); monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
    return dict(HF_HUB_CACHE=str(tmp_path/'hub'), HF_HUB_OFFLINE='1')

def test_dry_run_writes_a_model_folder_without_the_training_state(trained):
    assert sorted(p.name for p in (trained/'exported').iterdir()) == ['README.md', 'config.json', 'model.safetensors']
    card = (trained/'exported'/'README.md').read_text(encoding='utf-8')
    measured = json.loads((trained/'run'/'metrics.json').read_text())
    for part in ['# me/shapes', "load_model('hf-hub:me/shapes')", 's/captions_en.json', f'| rsum | {round(measured["rsum"], 4)} |', '| epochs trained | 1 |']:
        assert part in card, part
    config = json.loads((trained/'exported'/'config.json').read_text())
    assert config['format'] == 'phoalign-model' and config['config']['model']['image_tower'] == 'tiny_cnn'
    assert 'optimizer' not in config and (trained/'exported'/'model.safetensors').stat().st_size < (trained/'run'/'best.pt').stat().st_size

def test_the_folder_goes_wherever_a_checkpoint_goes(trained, run_metrics):
    assert ok(phoalign('eval', 'exported', *DATA, cwd=trained)) == run_metrics   # the same model, the same numbers
    ok(phoalign('encode', 'exported', '--images', 's/captions_en.json', '--out', 'index', '--no-progress', '--device', 'cpu', cwd=trained))
    hits = json.loads(ok(phoalign('search', 'index', '--text', 'a red circle', '-k', '3', '--json', cwd=trained)))   # reloads the folder the index names
    again = json.loads(ok(phoalign('search', 'index', '--text', 'a red circle', '-k', '3', '--json', '--checkpoint', 'exported', cwd=trained)))
    assert len(hits) == 3 and hits == again

def test_hf_hub_name_reads_the_cache_offline(trained, run_metrics, hub_cache):
    from phoalign.model import load_model
    a, b = load_model('hf-hub:me/shapes', 'cpu'), load_model(trained/'run'/'best.pt', 'cpu')
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(v, sb[k]) if torch.is_tensor(v) else v == sb[k] for k, v in sa.items())
    t = ['a red circle', 'two blue squares']
    assert torch.allclose(a.encode_text(t), b.encode_text(t), atol=1e-6)
    assert ok(phoalign('eval', 'hf-hub:me/shapes', *DATA, cwd=trained, env=hub_cache)) == run_metrics
    code, _, err = run_main('eval', 'hf-hub:me/other', *DATA, cwd=trained)   # in this process (same parser and message), reading the same cache
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert 'hf-hub:me/other: not in the local Hugging Face cache' in err

def test_push_errors_are_one_line_and_upload_nothing(trained, tmp_path):
    code, _, err = run_main('push', 'rnu', '--repo', 'me/shapes', '--dry-run', 'elsewhere', cwd=trained)   # in this process: same parser and message
    assert code == 2 and 'checkpoint rnu does not exist' in err and not (trained/'elsewhere').exists(), err
    no_token = phoalign('push', 'run', '--repo', 'me/shapes', cwd=trained, env=dict(HF_HOME=str(tmp_path/'home'), HF_TOKEN=None))
    assert no_token.returncode == 2 and no_token.stderr == 'phoalign: error: no Hugging Face token: log in with `hf auth login` or set HF_TOKEN (nothing was uploaded)\n'
    offline = phoalign('push', 'run', '--repo', 'me/shapes', cwd=trained, env=dict(HF_HOME=str(tmp_path/'home'), HF_TOKEN='hf_not_a_real_token'))
    assert offline.returncode == 2 and len(offline.stderr.strip().splitlines()) == 1, offline.stderr
    assert 'could not upload to me/shapes' in offline.stderr and 'nothing was uploaded' in offline.stderr and 'pushed' not in offline.stdout
