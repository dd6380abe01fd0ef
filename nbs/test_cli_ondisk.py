"""Indexes larger than memory as a user meets them: `phoalign encode --max-memory` below the gallery's vectors builds IVF-PQ
with its inverted lists on disk (above, the usual index); `phoalign search` reads it memory-mapped; an update merges only the
new images' lists into a new lists file; a new process that loads it does not read the lists into memory."""
import json, shutil, subprocess, sys
from pathlib import Path
import pytest
from test_cli_data import phoalign
from test_cli_search import gallery_and_model, run_json, run_main
from test_cli_index import photo_sets

@pytest.fixture(scope='module')
def work(tmp_path_factory):
    "A fresh folder holding a copy of the gallery and a tiny model's checkpoint."
    return gallery_and_model(tmp_path_factory.mktemp('ondisk'))

def manifest(folder:Path) -> dict: return json.loads((folder/'manifest.json').read_text(encoding='utf-8'))

def test_max_memory_picks_lists_on_disk_below_the_vectors_size(work, tmp_path):
    shutil.copy(work/'model.pt', tmp_path/'model.pt'); shutil.copytree(work/'gallery', tmp_path/'gallery')
    big = run_json('encode', 'model.pt', '--images', 'gallery/captions_vi.json', '--out', 'roomy', '--max-memory', '1GiB', cwd=tmp_path)
    small = run_json('encode', 'model.pt', '--images', 'gallery/captions_vi.json', '--out', 'tight', '--max-memory', '2KB', cwd=tmp_path)
    assert (big['kind'], big['ondisk'], small['kind'], small['ondisk']) == ('flat', False, 'ivfpq', True), (big, small)
    assert small['images'] == 29 and small['recall_k'] == 10 and small['recall_queries'].startswith('captions') and 0 < small['recall'] <= 1, small
    m = manifest(tmp_path/'tight')
    assert m['ondisk'] and m['max_memory'] == 2000 and (tmp_path/'tight'/m['files']['lists']).is_file()
    photos = sorted((tmp_path/'gallery'/'photos').glob('*.jpg'))[::4]
    agree = 0
    for p in photos:                                            # each image's best match, on disk vs exact (a user's top 10)
        on = run_main('search', 'tight', '--image', p.relative_to(tmp_path), '-k', '10', '--json', cwd=tmp_path)
        ex = run_main('search', 'roomy', '--image', p.relative_to(tmp_path), '-k', '10', '--json', cwd=tmp_path)
        assert on[0] == ex[0] == 0, on[2] + ex[2]
        agree += json.loads(on[1])[0]['path'] == json.loads(ex[1])[0]['path']
    assert agree >= 0.8 * len(photos), (agree, len(photos), small)
    hits = run_json('search', 'tight', '--text', 'một con mèo nằm trên thảm', '-k', '3', cwd=tmp_path)
    assert len(hits) == 3 and hits[0]['recall'] == small['recall']

def test_max_memory_typos_and_in_memory_kinds_are_refused(work, tmp_path):
    shutil.copy(work/'model.pt', tmp_path/'model.pt'); photo_sets(work, tmp_path, photos=5)
    code, _, err = run_main('encode', 'model.pt', '--images', 'photos', '--out', 'idx', '--max-memory', '1GIG', cwd=tmp_path)
    assert code == 2 and "--max-memory '1GIG': give a size such as 1GiB" in err and not (tmp_path/'idx').exists(), err
    code, _, err = run_main('encode', 'model.pt', '--images', 'photos', '--out', 'idx', '--max-memory', '1KB', '--kind', 'hnsw', cwd=tmp_path)
    assert code == 2 and "kind='hnsw' holds them in memory" in err, err
    run_json('encode', 'model.pt', '--images', 'photos', '--out', 'mem', cwd=tmp_path)          # an index in memory, later too big
    code, _, err = run_main('encode', 'model.pt', '--images', 'photos', '--out', 'mem', '--max-memory', '1KB', cwd=tmp_path)
    assert code == 2 and 'encode again with overwrite (--overwrite)' in err, err

def test_adding_images_later_merges_their_lists(work, tmp_path):
    sets = photo_sets(work, tmp_path, first=19, more=10)
    shutil.copy(work/'model.pt', tmp_path/'model.pt')
    run_json('encode', 'model.pt', '--images', 'first', '--out', 'idx', '--max-memory', '1KB', cwd=tmp_path)
    before = manifest(tmp_path/'idx')
    report = run_json('encode', 'model.pt', '--images', 'more', '--out', 'idx', '--max-memory', '1KB', cwd=tmp_path)
    after = manifest(tmp_path/'idx')
    assert (report['encoded'], report['images'], report['ondisk']) == (10, 29, True), report
    assert after['files']['vectors'] == before['files']['vectors'] and after['files']['lists'] != before['files']['lists']   # floats appended
    assert sorted(p.name for p in (tmp_path/'idx').iterdir() if p.name != '.lock') == sorted(['manifest.json', *after['files'].values()])
    hit, = run_json('search', 'idx', '--image', Path(sets['more'][3]).relative_to(tmp_path), '-k', '1', cwd=tmp_path)
    assert (tmp_path/hit['path']).resolve() == Path(sets['more'][3]), hit

BUILD = '''
import sys, numpy as np
from phoalign.index import EmbeddingIndex, ondisk_factory
n, dim = 10000, 32
rng = np.random.default_rng(0)
centres = rng.standard_normal((200, dim)).astype(np.float32)
x = centres[rng.integers(0, 200, n)] + 0.3 * rng.standard_normal((n, dim)).astype(np.float32)
x /= np.linalg.norm(x, axis=1, keepdims=True)
ix = EmbeddingIndex(dim, 'ivfpq', ondisk_factory(n, dim), ondisk=True, max_memory='256KB', use_gpu=False)
ix.add(x[:-500], [f'v{i}' for i in range(n - 500)]).save('idx')
q = x[-500:] + 0.05 * rng.standard_normal((500, dim)).astype(np.float32)     # held-out vectors, noisy: not the stored ones
q /= np.linalg.norm(q, axis=1, keepdims=True)
ix.tune(0.9, queries=q[:250]); ix.save('idx'); np.save('queries.npy', q[250:])
'''

CHECK = '''
import json, sys, numpy as np
from phoalign.index import EmbeddingIndex, _exact_rows
def mapped(name):
    "Resident bytes and size of the mapping of the file `name`."
    rss = size = 0; mine = False
    for line in open('/proc/self/smaps'):
        head = line.split()
        if '-' in head[0] and len(head) >= 5 and not head[0].endswith(':'):
            mine = line.rstrip().endswith(name)
            if mine: lo, hi = (int(v, 16) for v in head[0].split('-')); size += hi - lo
        elif mine and head[0] == 'Rss:': rss += int(head[1]) * 1024
    return rss, size
ix = EmbeddingIndex.load('idx', use_gpu=False)
lists = json.load(open('idx/manifest.json'))['files']['lists']
at_load = mapped(lists)
q = np.load('queries.npy')
rows = ix.search_rows(q, 10)[1]; exact = _exact_rows(ix, q, 10)
print(json.dumps(dict(at_load=at_load, after=mapped(lists), top1=float((rows[:, 0] == exact[:, 0]).mean()),
                      recall=float(np.mean([len(set(a) & set(e)) / 10 for a, e in zip(rows, exact)])), ondisk=ix.ondisk)))
'''

def test_on_disk_index_loads_without_reading_its_lists(tmp_path):
    subprocess.run([sys.executable, '-c', BUILD], cwd=tmp_path, check=True, capture_output=True)
    r = subprocess.run([sys.executable, '-c', CHECK], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    (rss, size), (after, _) = got['at_load'], got['after']
    assert got['ondisk'] and size > 0 and rss <= 0.05 * size and after > rss, got   # mapped, not read: a search reads the lists it probes
    assert got['top1'] >= 0.9 and got['recall'] >= 0.85, got
