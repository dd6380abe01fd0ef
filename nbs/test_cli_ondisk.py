"""Indexes larger than memory as a user meets them: `phoalign encode --max-memory` below the gallery's vectors builds IVF-PQ
with its inverted lists on disk (above, the usual index); `phoalign search` reads it memory-mapped; an update merges only the
new images' lists into a new lists file; a new process that loads it does not read the lists into memory.
One module fixture encodes the gallery once each way (the on-disk index in two steps), and the tests share it."""
import json, shutil, subprocess, sys
from pathlib import Path
import numpy as np, pytest
from test_cli_search import gallery_and_model, run_json, run_main

def manifest(folder:Path) -> dict: return json.loads((folder/'manifest.json').read_text(encoding='utf-8'))

@pytest.fixture(scope='module')
def built(tmp_path_factory):
    """`(folder, reports)`: a folder holding the gallery, a tiny model's checkpoint, `roomy/` (encoded under 1GiB: the usual
    index) and `tight/` (under 2KB: lists on disk), this one encoded from a caption file of 19 of the 29 images, then updated
    with the whole caption file; the encode reports (`roomy`, `first`, `update`) and the manifest between the two steps (`before`)."""
    d = gallery_and_model(tmp_path_factory.mktemp('ondisk'))
    cap = json.loads((d/'gallery'/'captions_vi.json').read_text(encoding='utf-8'))
    first = {im['id'] for im in sorted(cap['images'], key=lambda im: im['id'])[:19]}
    sub = dict(cap, images=[im for im in cap['images'] if im['id'] in first], annotations=[a for a in cap['annotations'] if a['image_id'] in first])
    (d/'gallery'/'first.json').write_text(json.dumps(sub, ensure_ascii=False), encoding='utf-8')
    roomy = subprocess.Popen([shutil.which('phoalign'), 'encode', 'model.pt', '--images', 'gallery/captions_vi.json', '--out', 'roomy',
                              '--max-memory', '1GiB', '--json'], cwd=d, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reports = dict(first=run_json('encode', 'model.pt', '--images', 'gallery/first.json', '--out', 'tight', '--max-memory', '2KB', cwd=d))
    reports['before'] = manifest(d/'tight')
    reports['update'] = run_json('encode', 'model.pt', '--images', 'gallery/captions_vi.json', '--out', 'tight', '--max-memory', '2KB', cwd=d)
    out, err = roomy.communicate(timeout=600)
    assert roomy.returncode == 0, out + err
    reports['roomy'], reports['new'] = json.loads(out), sorted(im['file_name'] for im in cap['images'] if im['id'] not in first)
    return d, reports

def test_max_memory_picks_lists_on_disk_below_the_vectors_size(built):
    d, r = built
    big, small = r['roomy'], r['update']
    assert (big['kind'], big['ondisk'], small['kind'], small['ondisk'], r['first']['ondisk']) == ('flat', False, 'ivfpq', True, True), (big, small)
    assert small['images'] == 29 and small['recall_k'] == 10 and small['recall_queries'].startswith('captions') and 0 < small['recall'] <= 1, small
    m = manifest(d/'tight')
    assert m['ondisk'] and m['max_memory'] == 2000 and (d/'tight'/m['files']['lists']).is_file()
    photos = sorted((d/'gallery'/'photos').glob('*.jpg'))[::4]
    agree = 0
    for p in photos:                                            # each image's best match, on disk vs exact (a user's top 10)
        on = run_main('search', 'tight', '--image', p.relative_to(d), '-k', '10', '--json', cwd=d)
        ex = run_main('search', 'roomy', '--image', p.relative_to(d), '-k', '10', '--json', cwd=d)
        assert on[0] == ex[0] == 0, on[2] + ex[2]
        agree += json.loads(on[1])[0]['path'] == json.loads(ex[1])[0]['path']
    assert agree >= 0.8 * len(photos), (agree, len(photos), small)
    hits = run_json('search', 'tight', '--text', 'một con mèo nằm trên thảm', '-k', '3', cwd=d)   # as a user runs it: its own process
    assert len(hits) == 3 and hits[0]['recall'] == small['recall']

def test_max_memory_typos_and_in_memory_kinds_are_refused(built):
    d, _ = built
    code, _, err = run_main('encode', 'model.pt', '--images', 'gallery/photos', '--out', 'idx', '--max-memory', '1GIG', cwd=d)
    assert code == 2 and "--max-memory '1GIG': give a size such as 1GiB" in err and not (d/'idx').exists(), err
    code, _, err = run_main('encode', 'model.pt', '--images', 'gallery/photos', '--out', 'idx', '--max-memory', '1KB', '--kind', 'hnsw', cwd=d)
    assert code == 2 and "kind='hnsw' holds them in memory" in err and not (d/'idx').exists(), err   # refused before encoding: no folder made
    before = manifest(d/'roomy')                                # an index in memory, later too big: refused, left as it was
    code, _, err = run_main('encode', 'model.pt', '--images', 'gallery/captions_vi.json', '--out', 'roomy', '--max-memory', '1KB', cwd=d)
    assert code == 2 and 'encode again with overwrite (--overwrite)' in err and manifest(d/'roomy') == before, err

def test_adding_images_later_merges_their_lists(built):
    d, r = built
    report, before, after = r['update'], r['before'], manifest(d/'tight')
    assert (r['first']['images'], report['encoded'], report['reused'], report['images']) == (19, 10, 19, 29), report
    assert after['files']['vectors'] == before['files']['vectors'] and after['files']['lists'] != before['files']['lists']   # floats appended
    assert sorted(p.name for p in (d/'tight').iterdir() if p.is_file() and p.name != '.lock') == sorted(['manifest.json', *after['files'].values()])   # and captions/
    new = d/'gallery'/r['new'][3]
    code, out, err = run_main('search', 'tight', '--image', new.relative_to(d), '-k', '1', '--json', cwd=d)
    assert code == 0 and (d/json.loads(out)[0]['path']).resolve() == new.resolve(), out + err   # paths relative to the gallery root

def build_synthetic(folder:Path, n:int=10_000, dim:int=32):
    "An on-disk index of `n` clustered vectors in `folder/idx`, tuned on noisy held-out vectors; others saved as `queries.npy`."
    from phoalign.index import EmbeddingIndex, ondisk_factory
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((200, dim)).astype(np.float32)
    x = centres[rng.integers(0, 200, n)] + 0.3 * rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ix = EmbeddingIndex(dim, 'ivfpq', ondisk_factory(n, dim), ondisk=True, max_memory='256KB', use_gpu=False)
    ix.add(x[:-500], [f'v{i}' for i in range(n - 500)]).save(folder/'idx')
    q = x[-500:] + 0.05 * rng.standard_normal((500, dim)).astype(np.float32)     # held-out vectors, noisy: not the stored ones
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    ix.tune(0.9, queries=q[:250]); ix.save(folder/'idx'); np.save(folder/'queries.npy', q[250:])

CHECK = '''
import json, resource, sys, numpy as np
from phoalign.index import EmbeddingIndex, _exact_rows
def mapped(name):
    "Resident bytes and size of the mappings of the file `name`."
    rss = size = 0; mine = False
    for line in open('/proc/self/smaps'):
        head = line.split()
        if '-' in head[0] and len(head) >= 5 and not head[0].endswith(':'):
            mine = line.rstrip().endswith(name)
            if mine: lo, hi = (int(v, 16) for v in head[0].split('-')); size += hi - lo
        elif mine and head[0] == 'Rss:': rss += int(head[1]) * 1024
    return rss, size
files = json.load(open('idx/manifest.json'))['files']
ix = EmbeddingIndex.load('idx', use_gpu=False)
at_load = dict(lists=mapped(files['lists']), vectors=mapped(files['vectors']))
q = np.load('queries.npy')
rows = ix.search_rows(q, 10)[1]; exact = _exact_rows(ix, q, 10)
print(json.dumps(dict(at_load=at_load, after=dict(lists=mapped(files['lists']), vectors=mapped(files['vectors'])), top1=float((rows[:, 0] == exact[:, 0]).mean()),
                      recall=float(np.mean([len(set(a) & set(e)) / 10 for a, e in zip(rows, exact)])), ondisk=ix.ondisk)))
'''

def test_on_disk_index_loads_without_reading_its_lists(tmp_path):
    build_synthetic(tmp_path)                                   # built here; loaded below by a fresh process
    r = subprocess.run([sys.executable, '-c', CHECK], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    (rss, size), (after, _) = got['at_load']['lists'], got['after']['lists']
    assert got['ondisk'] and size > 0 and rss <= 0.05 * size and after > rss, got   # mapped, not read: a search reads the lists it probes
    vectors_size = got['at_load']['vectors'][1]
    assert vectors_size > 0 and got['at_load']['vectors'][0] == got['after']['vectors'][0] == 0, got   # the floats are read from the file, never through the mapping
    assert got['top1'] >= 0.9 and got['recall'] >= 0.85, got
