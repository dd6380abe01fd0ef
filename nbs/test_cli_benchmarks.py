"""`phoalign eval --benchmark` as a user runs it, and its recalls against an independent computation: CLIP_benchmark's `recall_at_k` (re-implemented in numpy) for the first-caption protocol, plain numpy ranks for the all-captions one."""
import json, os, shutil, subprocess
from pathlib import Path
import cv2, numpy as np, pytest, torch
from test_cli_search import run_main

repo = Path(__file__).resolve().parents[1]
photos = repo/'images'/'photos'

def phoalign(*args, cwd=None):
    exe = shutil.which('phoalign') or pytest.fail('the `phoalign` console script is not installed (pip install -e ".[dev]")')
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'OMP_NUM_THREADS': '1'}
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600, env=env)

def evaluate(*args, cwd) -> dict:
    r = phoalign('eval', *args, '--json', '--device', 'cpu', cwd=cwd)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)

def save_tiny_model(path:Path, captions:list, images:list):
    "A tiny untrained model (nothing is trained) written where `phoalign eval` reads it."
    from phoalign.testing import tiny_search_model
    from phoalign.model import save_model
    save_model(tiny_search_model(captions, images), path)

# --- CLIP_benchmark's zero-shot retrieval recall, re-implemented in numpy (clip_benchmark/metrics/zeroshot_retrieval.py) ---
def recall_at_k(scores, positive_pairs, k):
    "Per query, the share of its positives among its top-k (CLIP_benchmark's `recall_at_k`: topk indices, one-hot, true positives)."
    nb_texts, nb_images = scores.shape
    topk_indices = np.argsort(-scores, axis=1, kind='stable')[:, :k]
    nb_positive = positive_pairs.sum(1)
    topk_onehot = np.eye(nb_images, dtype=bool)[topk_indices]                   # [queries, k, candidates]
    nb_true_positive = (topk_onehot & positive_pairs[:, None, :]).sum((1, 2))
    return nb_true_positive / nb_positive

def batchify(func, X, Y, batch_size, **kwargs):
    return np.concatenate([func(X[s:s + batch_size], Y[s:s + batch_size], **kwargs) for s in range(0, len(X), batch_size)])

def clip_benchmark_recalls(images, texts, texts_image_index, ks=(1, 5, 10), batch_size=7):
    "CLIP_benchmark's `evaluate`: scores = texts @ images.T, a positive-pairs matrix, a query is a hit when recall_at_k > 0 (in %)."
    scores = texts @ images.T
    positive_pairs = np.zeros_like(scores, dtype=bool)
    positive_pairs[np.arange(len(scores)), texts_image_index] = True
    out = {}
    for k in ks:
        out[f't2i_r{k}'] = 100 * (batchify(recall_at_k, scores, positive_pairs, batch_size, k=k) > 0).mean()
        out[f'i2t_r{k}'] = 100 * (batchify(recall_at_k, scores.T, positive_pairs.T, batch_size, k=k) > 0).mean()
    return out

def numpy_all_captions(images, texts, owner, ks=(1, 5, 10)):
    "Plain ranks: each caption's rank of its image; each image's best rank over its own captions (ties against the query)."
    scores = texts @ images.T
    t2i = (scores >= scores[np.arange(len(owner)), owner][:, None]).sum(1) - 1
    own = owner[None, :] == np.arange(len(images))[:, None]
    best = np.where(own, scores.T, -np.inf).max(1)
    i2t = ((scores.T >= best[:, None]) & ~own).sum(1)
    return {**{f't2i_r{k}': 100 * (t2i < k).mean() for k in ks}, **{f'i2t_r{k}': 100 * (i2t < k).mean() for k in ks}}

def embeddings(model_path, image_paths, captions):
    "The model's own embeddings, straight from the model (not through phoalign.encode), in float64."
    from phoalign.model import load_model, image_transforms
    from phoalign.data.transforms import read_image
    model = load_model(model_path, 'cpu')
    tf = image_transforms(model)[1]
    with torch.no_grad():
        img = model.encode_image(torch.stack([tf(read_image(p)) for p in image_paths])).double().numpy()
        txt = model.encode_text(list(captions)).double().numpy()
    return img, txt

@pytest.fixture(scope='module')
def shapes_sets(tmp_path_factory):
    "`phoalign data synth` shapes written as KTVIC (JSON + images/) and as Crossmodal-3600 (captions.jsonl + images/KEY.jpg), and a tiny model."
    work = tmp_path_factory.mktemp('bench')
    r = phoalign('data', 'synth', '--out', 'shapes', '--n', '30', '--lang', 'vi', '--seed', '3', cwd=work)
    assert r.returncode == 0, r.stdout + r.stderr
    coco = json.loads((work/'shapes'/'captions_vi.json').read_text(encoding='utf-8'))
    by_image = {im['id']: [a['caption'] for a in coco['annotations'] if a['image_id'] == im['id']] for im in coco['images']}
    (work/'ktvic').mkdir(); shutil.copytree(work/'shapes'/'images', work/'ktvic'/'images')
    ktvic = dict(images=[dict(id=im['id'], filename=im['file_name']) for im in coco['images']],
                 annotations=[dict(id=a['id'], image_id=a['image_id'], caption=a['caption'], segment_caption=a['caption'].replace('hình ', 'hình_'))
                              for a in coco['annotations']])
    (work/'ktvic'/'test_data.json').write_text(json.dumps(ktvic, ensure_ascii=False), encoding='utf-8')
    (work/'xm'/'images').mkdir(parents=True)
    lines = []
    for im in coco['images']:
        key = f'{im["id"]:016x}'
        cv2.imwrite(str(work/'xm'/'images'/f'{key}.jpg'), cv2.imread(str(work/'shapes'/'images'/im['file_name'])))
        caps = by_image[im['id']][::-1]                # another first caption than KTVIC's
        lines.append(json.dumps({'image/key': key, 'vi': {'caption': caps, 'caption/tokenized': [c.lower() for c in caps]},
                                 'en': {'caption': ['shape'], 'caption/tokenized': ['shape']}}, ensure_ascii=False))
    (work/'xm'/'captions.jsonl').write_text('\n'.join(lines) + '\n', encoding='utf-8')
    ktvic_images = [work/'ktvic'/'images'/im['file_name'] for im in coco['images']]
    save_tiny_model(work/'model.pt', [c for cs in by_image.values() for c in cs], ktvic_images)
    return work, coco, by_image, ktvic_images, [work/'xm'/'images'/f'{im["id"]:016x}.jpg' for im in coco['images']]

KEYS = ['t2i_r1', 't2i_r5', 't2i_r10', 'i2t_r1', 'i2t_r5', 'i2t_r10']

@pytest.mark.parametrize('name', ['ktvic', 'xm3600'])
def test_recalls_agree_with_clip_benchmark(shapes_sets, name):
    work, coco, by_image, ktvic_images, xm_images = shapes_sets
    data, paths = ('ktvic/test_data.json', ktvic_images) if name == 'ktvic' else ('xm', xm_images)
    caps = [by_image[im['id']] if name == 'ktvic' else by_image[im['id']][::-1] for im in coco['images']]
    captions = [c for cs in caps for c in cs]
    owner = np.repeat(np.arange(len(caps)), [len(cs) for cs in caps])
    img, txt = embeddings(work/'model.pt', paths, captions)
    every = evaluate('model.pt', '--benchmark', name, '--data', data, cwd=work)
    first = evaluate('model.pt', '--benchmark', name, '--data', data, '--protocol', 'clip_benchmark', cwd=work)
    assert (every['images'], every['captions'], first['captions'], every['images_missing']) == (30, 150, 30, 0)
    firsts = np.array([np.flatnonzero(owner == i)[0] for i in range(len(caps))])
    cb_first = clip_benchmark_recalls(img, txt[firsts], np.arange(len(caps)))
    cb_every, plain = clip_benchmark_recalls(img, txt, owner), numpy_all_captions(img, txt, owner)
    for k in KEYS:
        assert abs(first[k] - cb_first[k]) <= 1e-6, (k, first[k], cb_first[k])
        assert abs(every[k] - plain[k]) <= 1e-6 and abs(every[k] - cb_every[k]) <= 1e-6, (k, every[k], plain[k], cb_every[k])
    assert abs(every['mean_recall'] - np.mean([plain[k] for k in KEYS])) <= 1e-4 and abs(every['rsum'] - sum(plain[k] for k in KEYS)) <= 1e-3
    assert any(first[k] != every[k] for k in KEYS)          # the protocol changes what is measured

def test_language_picks_the_captions(shapes_sets):
    work = shapes_sets[0]
    en = evaluate('model.pt', '--benchmark', 'xm3600', '--data', 'xm', '--language', 'en', cwd=work)
    assert (en['language'], en['captions'], en['images']) == ('en', 30, 30)
    # the refusals in this process (the same parser and messages, without a command's start-up)
    code, _, err = run_main('eval', 'model.pt', '--benchmark', 'xm3600', '--data', 'xm', '--language', 'fr', cwd=work)
    assert code != 0 and "no 'fr' captions; the file has en, vi" in err, err
    code, _, err = run_main('eval', 'model.pt', '--benchmark', 'ktvic', '--data', 'ktvic/test_data.json', '--language', 'en', cwd=work)
    assert code != 0 and 'Vietnamese captions only' in err, err

def write_hand_ktvic(folder:Path, annotations:list):
    "A KTVIC test file written by hand: three photos, one of them never copied (missing)."
    (folder/'ktvic'/'images').mkdir(parents=True, exist_ok=True)
    for n in ('astronaut.jpg', 'coffee.jpg'): shutil.copy(photos/n, folder/'ktvic'/'images'/n)
    data = {'images': [{'id': 1, 'filename': 'astronaut.jpg'}, {'id': 2, 'filename': 'coffee.jpg'}, {'id': 3, 'filename': 'gone.jpg'}],
            'annotations': annotations}
    (folder/'ktvic'/'test_data.json').write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding='utf-8')

GOOD = [{'id': 1, 'image_id': 1, 'caption': 'Một phi hành gia mặc bộ đồ trắng', 'segment_caption': 'Một phi_hành_gia mặc bộ đồ trắng'},
        {'id': 2, 'image_id': 1, 'caption': 'Phi hành gia đứng trước lá cờ', 'segment_caption': 'Phi_hành_gia đứng trước lá cờ'},
        {'id': 3, 'image_id': 2, 'caption': 'Một tách cà phê trên bàn', 'segment_caption': 'Một tách cà_phê trên bàn'},
        {'id': 4, 'image_id': 3, 'caption': 'Ảnh không còn', 'segment_caption': 'Ảnh không còn'}]

def test_hand_written_ktvic_from_a_fresh_folder(tmp_path):
    write_hand_ktvic(tmp_path, GOOD)
    save_tiny_model(tmp_path/'model.pt', [a['caption'] for a in GOOD], [tmp_path/'ktvic'/'images'/'astronaut.jpg', tmp_path/'ktvic'/'images'/'coffee.jpg'])
    m = evaluate('model.pt', '--benchmark', 'ktvic', '--data', 'ktvic/test_data.json', cwd=tmp_path)
    assert (m['images'], m['captions'], m['images_missing'], m['protocol']) == (2, 3, 1, 'all_captions'), m
    assert m['i2t_r5'] == m['t2i_r5'] == 100.0                    # two images: every query is a hit at 5
    r = phoalign('eval', 'model.pt', '--benchmark', 'ktvic', '--data', 'ktvic/test_data.json', '--device', 'cpu', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert 'ktvic (vi, all_captions protocol) from ktvic/test_data.json: 2 images, 3 captions; images left out with their captions: 1 missing' in r.stdout
    assert 'RSum' in r.stdout and 'mean recall' in r.stdout

def test_broken_files_and_typos(tmp_path):
    "Refusals, run in this process (the same parser and messages, without a command's start-up each)."
    write_hand_ktvic(tmp_path, GOOD[:3] + [{'id': 5, 'image_id': 9, 'caption': 'Không có ảnh', 'segment_caption': 'Không có ảnh'}])
    code, _, err = run_main('eval', 'model.pt', '--benchmark', 'ktvic', '--data', 'ktvic/test_data.json', cwd=tmp_path)   # the data is read before the model
    assert code != 0 and 'test_data.json (row 3): annotations[3] refers to image_id 9' in err, err
    (tmp_path/'xm'/'images').mkdir(parents=True)
    shutil.copy(photos/'coffee.jpg', tmp_path/'xm'/'images'/'k1.jpg')
    good = json.dumps({'image/key': 'k1', 'vi': {'caption': ['Một tách cà phê'], 'caption/tokenized': ['một tách cà phê']}}, ensure_ascii=False)
    (tmp_path/'xm'/'captions.jsonl').write_text(good + '\n{"image/key": "k2", "vi": {"caption": [\n', encoding='utf-8')
    code, _, err = run_main('eval', 'model.pt', '--benchmark', 'xm3600', '--data', 'xm', cwd=tmp_path)
    assert code != 0 and 'captions.jsonl (row 2): line 2 is not JSON' in err, err
    code, _, err = run_main('eval', 'model.pt', '--benchmark', 'ktvik', '--data', 'ktvic/test_data.json', cwd=tmp_path)
    assert code == 2 and "invalid choice: 'ktvik'" in err and all(b in err for b in ('ktvic', 'openviic', 'xm3600')), err
    code, _, err = run_main('eval', 'model.pt', '--benchmark', 'xm3600', '--data', 'xm', '--protocol', 'first', cwd=tmp_path)
    assert code == 2 and "invalid choice: 'first'" in err and 'clip_benchmark' in err, err
