"""Published models named where a checkpoint goes (`hf:`, `open_clip:`, `sbert:`), as a user runs the commands: a fresh
folder, relative paths, tiny random models written to local folders (nothing is downloaded)."""
import json, shutil
from pathlib import Path
import pytest
from test_cli_data import phoalign, gallery
from test_cli_search import run_json, run_main

@pytest.fixture(scope='module')
def work(tmp_path_factory):
    "A fresh folder with six photos, a tiny SigLIP (`models/siglip`) and a tiny multilingual CLIP (`models/sb-image`, `models/sb-text`)."
    from phoalign.testing import write_tiny_hf_clip, write_tiny_sbert_clip
    root = tmp_path_factory.mktemp('outside')
    (root/'photos').mkdir()
    for p in sorted((gallery/'photos').glob('*.jpg'))[:6]: shutil.copy(p, root/'photos'/p.name)
    write_tiny_hf_clip(root/'models'/'siglip', 'siglip')
    image, text = write_tiny_sbert_clip(root/'models'/'sb')
    return root

@pytest.fixture(autouse=True)
def cache(work, monkeypatch):
    "The outside models' checkpoints go to a cache inside the test's folder (the commands run with this environment)."
    monkeypatch.setenv('PHOALIGN_CACHE', str(work/'cache'))

@pytest.fixture(scope='module')
def siglip_index(work):
    "`phoalign encode hf:models/siglip` of the photos into `idx/` (its report), shared by the tests that read such an index."
    with pytest.MonkeyPatch.context() as mp:   # set up before the per-test `cache` fixture: the same cache, set here
        mp.setenv('PHOALIGN_CACHE', str(work/'cache'))
        return run_json('encode', 'hf:models/siglip', '--images', 'photos', '--out', 'idx', cwd=work)

def test_encode_with_hf_name_then_search_from_elsewhere(work, siglip_index):
    report = siglip_index
    assert (report['images'], report['encoded'], report['skipped']) == (6, 6, [])
    manifest = json.loads((work/'idx'/'manifest.json').read_text())
    assert Path(manifest['model']['checkpoint']).parent == work/'cache'/'outside'   # the cached checkpoint the index reloads
    (work/'elsewhere').mkdir(exist_ok=True)
    hits = run_json('search', '../idx', '--text', 'a red square', '-k', '3', cwd=work/'elsewhere')
    assert len(hits) == 3 and [h['score'] for h in hits] == sorted((h['score'] for h in hits), reverse=True)
    first = sorted((work/'photos').glob('*.jpg'))[0]
    same = run_json('search', '../idx', '--image', f'../photos/{first.name}', '-k', '1', cwd=work/'elsewhere')
    assert Path(same[0]['path']).name == first.name and abs(same[0]['score'] - 1) < 1e-4
    again = run_json('encode', 'hf:models/siglip', '--images', 'photos', '--out', 'idx', cwd=work)   # the same model: every image reused
    assert (again['encoded'], again['reused']) == (0, 6)
    (work/'elsewhere'/'labels.txt').write_text('a red square\na blue circle\na green triangle\n')
    r = phoalign('tag', '../idx', '--labels', 'labels.txt', '-k', '3', '--json', cwd=work/'elsewhere')
    assert r.returncode == 0, r.stderr
    assert 'sigmoid of' in r.stderr and '-1.5' in r.stderr   # SigLIP's own bias and sigmoid
    tags = json.loads(r.stdout)
    assert len(tags) == 6 and all(0 < s < 1 for t in tags for s in t['scores'])

def test_eval_takes_a_name(work):
    (work/'gallery').mkdir(exist_ok=True)
    shutil.copy(gallery/'captions_en.json', work/'gallery'/'captions_en.json')
    if not (work/'gallery'/'photos').exists(): shutil.copytree(gallery/'photos', work/'gallery'/'photos')
    r = phoalign('eval', 'hf:models/siglip', '--data', 'gallery/captions_en.json', '--split', 'all', '--json', cwd=work)
    assert r.returncode == 0, r.stderr
    metrics = json.loads(r.stdout)
    assert {'i2t_r1', 't2i_r10', 'rsum'} <= set(metrics) and (metrics['images'], metrics['captions']) == (29, 63), metrics

def test_sbert_pair_encodes_and_searches_vietnamese(work):
    run_json('encode', 'sbert:models/sb/image+models/sb/text', '--images', 'photos', '--out', 'idx-sb', cwd=work)
    hits = run_json('search', 'idx-sb', '--text', 'một hình vuông đỏ', '-k', '2', cwd=work)
    assert len(hits) == 2
    code, _, err = run_main('encode', 'hf:models/siglip', '--images', 'photos', '--out', 'idx-sb', cwd=work)   # another model: refused (in this process)
    assert code != 0 and 'written by another model' in err and 'Traceback' not in err, err

@pytest.mark.parametrize('name,message', [('nohub:clip', "unknown model family 'nohub'"),
                                          ('hf:models/nothing', "'models/nothing'"),
                                          ('sbert:models/sb/image', 'name the image and the text model')])
def test_unknown_family_or_missing_model_is_one_line(work, name, message):
    code, _, err = run_main('encode', name, '--images', 'photos', '--out', 'idx-bad', cwd=work)   # in this process: the same parser and messages
    assert code != 0 and message in err and 'Traceback' not in err and len(err.strip().splitlines()) == 1, err
    assert not (work/'idx-bad').exists()

@pytest.mark.slow
def test_cir_stages_take_a_named_model(work):
    "CIR's stage 1 starts from the outside model's towers (--clip-model-path hf:...), stage 2 trains a combiner on them."
    r = phoalign('data', 'synth', '--out', 'shapes', '--n', '200', '--size', '32', '--lang', 'en', '--cirr', cwd=work)
    assert r.returncode == 0, r.stderr
    r = phoalign('cir', 'finetune', '--dataset', 'cirr', '--data-path', 'shapes', '--clip-model-path', 'hf:models/siglip', '--num-epochs', '1',
                 '--batch-size', '16', '--learning-rate', '1e-4', '--output-dir', 's1', '--no-progress', cwd=work)
    assert r.returncode == 0 and (work/'s1'/'best.pt').is_file(), r.stdout + r.stderr
    r = phoalign('cir', 'combiner', '--dataset', 'CIRR', '--data-path', 'shapes', '--clip-model-path', 'hf:models/siglip', '--projection-dim', '32',
                 '--hidden-dim', '64', '--num-epochs', '1', '--batch-size', '16', '--output-dir', 's2', '--no-progress', cwd=work)
    assert r.returncode == 0 and 'recall' in (r.stdout + r.stderr).lower(), r.stdout + r.stderr

@pytest.mark.slow
def test_serve_an_index_a_named_model_wrote(work, siglip_index):
    "The server reloads the outside model from the checkpoint the index names, and answers as search does."
    import socket, subprocess, time, urllib.parse, urllib.request, os
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    proc = subprocess.Popen([shutil.which('phoalign'), 'serve', 'idx', '--port', str(port)], cwd=work, stdout=subprocess.DEVNULL,
                            stderr=open(work/'serve-outside.err', 'w'), env={**os.environ, 'HF_HUB_OFFLINE': '1'})
    try:
        url, t0 = f'http://127.0.0.1:{port}/', time.time()
        while True:
            try: answer = json.load(urllib.request.urlopen(url + 'search?' + urllib.parse.urlencode(dict(q='a red square', k=3)), timeout=30)); break
            except OSError:
                assert proc.poll() is None, (work/'serve-outside.err').read_text()
                assert time.time() - t0 < 120; time.sleep(0.3)
        cli = run_json('search', 'idx', '--text', 'a red square', '-k', '3', cwd=work)
        assert [h['path'] for h in answer['results']] == [Path(h['path']).name for h in cli]
    finally: proc.terminate(); proc.wait(30)
