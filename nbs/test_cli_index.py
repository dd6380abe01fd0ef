"""An index folder under several writers and kills, as a user meets them: two `phoalign encode` runs into one folder,
`--no-wait`, a kill -9 in the middle of a save or an encode, and an update that appends only the new rows."""
import json, os, random, shutil, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest
from test_cli_data import phoalign
from test_cli_search import gallery_and_model, run_json

@pytest.fixture(scope='module')
def work(tmp_path_factory):
    "A fresh folder holding a copy of the gallery and a tiny model's checkpoint."
    return gallery_and_model(tmp_path_factory.mktemp('index'))

def photo_sets(work:Path, root:Path, **sizes) -> dict:
    "Folders under `root` named by `sizes`, each holding the next that many of the gallery's photos (no photo in two)."
    photos, out, at = sorted((work/'gallery'/'photos').glob('*.jpg')), {}, 0
    for name, n in sizes.items():
        (root/name).mkdir()
        for p in photos[at:at + n]: shutil.copy(p, root/name/p.name)
        out[name], at = sorted(str((root/name/p.name).resolve()) for p in photos[at:at + n]), at + n
    return out

def encode(*args, cwd) -> subprocess.Popen:
    exe = shutil.which('phoalign')
    return subprocess.Popen([exe, 'encode', *map(str, args), '--json'], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, 'HF_HUB_OFFLINE': '1'})

def hold_lock(folder:Path) -> subprocess.Popen:
    "Another process holding `folder`'s write lock until its stdin closes (it says 'held' once it has it)."
    code = f'import sys\nfrom phoalign.core import folder_lock\nwith folder_lock({str(folder)!r}, what="test"):\n print("held", flush=True); sys.stdin.read()'
    p = subprocess.Popen([sys.executable, '-c', code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == 'held'
    return p

def ids_of(folder:Path) -> list:
    from phoalign.index import EmbeddingIndex
    return sorted(EmbeddingIndex.load(folder).ids)

def test_two_encodes_into_one_folder_keep_every_image(work, tmp_path):
    sets = photo_sets(work, tmp_path, first=9, a=10, b=10)
    shutil.copy(work/'model.pt', tmp_path/'model.pt')
    run_json('encode', 'model.pt', '--images', 'first', '--out', 'idx', cwd=tmp_path)
    holder = hold_lock(tmp_path/'idx')                      # both start while the folder is taken: they must queue, not race
    runs = [encode('model.pt', '--images', name, '--out', 'idx', cwd=tmp_path) for name in ('a', 'b')]
    said = [r.stderr.readline() for r in runs]              # each says whom it waits for, and waits
    assert all(f'idx: process {holder.pid} (test, since' in line and 'waiting for it to finish' in line for line in said), said
    time.sleep(1); assert all(r.poll() is None for r in runs)
    holder.stdin.close(); holder.wait(timeout=30)
    outs = [r.communicate(timeout=120) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], outs
    reports = [json.loads(out) for out, _ in outs]
    assert sorted(r['encoded'] for r in reports) == [10, 10] and sorted(r['images'] for r in reports) == [19, 29]
    assert ids_of(tmp_path/'idx') == sorted(sets['first'] + sets['a'] + sets['b'])   # none lost

def test_no_wait_refuses_while_another_writes(work, tmp_path):
    photo_sets(work, tmp_path, photos=5)
    run_json('encode', work/'model.pt', '--images', 'photos', '--out', 'idx', cwd=tmp_path)
    before = (tmp_path/'idx'/'manifest.json').read_bytes()
    holder = hold_lock(tmp_path/'idx')
    try: r = phoalign('encode', work/'model.pt', '--images', 'photos', '--out', 'idx', '--no-wait', cwd=tmp_path)
    finally: holder.stdin.close(); holder.wait(timeout=30)
    assert r.returncode != 0 and f'idx: process {holder.pid} (test, since' in r.stderr and 'not waiting' in r.stderr, r.stderr
    assert 'Traceback' not in r.stderr and (tmp_path/'idx'/'manifest.json').read_bytes() == before
    assert run_json('encode', work/'model.pt', '--images', 'photos', '--out', 'idx', '--no-wait', cwd=tmp_path)['reused'] == 5   # free again

SAVER = '''
import sys, numpy as np
from phoalign.index import EmbeddingIndex
def vec(i): v = np.random.default_rng(i).standard_normal(8).astype(np.float32); return v / np.linalg.norm(v)
folder, step = sys.argv[1], 0
ix = EmbeddingIndex.load(folder)
while True:
    step += 1
    if step % 3: new = range(ix._next_key, ix._next_key + 50); ix.add(np.stack([vec(i) for i in new]), [f'v{i}' for i in new])
    else: ix.remove(ix.ids[::7])
    ix.save(folder); print(step, flush=True)
'''

def expected_ids(steps:int) -> list:
    "The ids after `steps` saves of SAVER (from an index of v0..v99)."
    ids, nxt = [f'v{i}' for i in range(100)], 100
    for step in range(1, steps + 1):
        if step % 3: ids, nxt = ids + [f'v{i}' for i in range(nxt, nxt + 50)], nxt + 50
        else: ids = [i for j, i in enumerate(ids) if j % 7]
    return ids

def test_kill_during_saves_leaves_the_state_before_or_after(tmp_path):
    from phoalign.index import EmbeddingIndex
    vec = lambda i: (v := np.random.default_rng(i).standard_normal(8).astype(np.float32)) / np.linalg.norm(v)
    EmbeddingIndex(8).add(np.stack([vec(i) for i in range(100)]), [f'v{i}' for i in range(100)]).save(tmp_path/'idx')
    (tmp_path/'saver.py').write_text(SAVER)
    rng, seen = random.Random(0), set()
    for _ in range(5):
        p = subprocess.Popen([sys.executable, 'saver.py', 'idx'], cwd=tmp_path, stdout=subprocess.PIPE, text=True)
        first = int(p.stdout.readline())                      # saving in a loop now
        time.sleep(rng.uniform(0, 0.4))
        p.send_signal(signal.SIGKILL); p.wait()
        done = first + len(p.stdout.read().split())           # saves it finished before the kill
        index = EmbeddingIndex.load(tmp_path/'idx')
        ids = [str(i) for i in index.ids]
        steps = [s for s in (done, done + 1) if ids == expected_ids(s)]   # before or after the save it was in
        assert steps, (done, len(ids))
        assert np.array_equal(np.asarray(index.vectors), np.stack([vec(int(i[1:])) for i in ids]))
        assert index._faiss.ntotal == len(ids) and index.search(np.asarray(index.vectors[:3]), 1)[1][:, 0].tolist() == ids[:3]
        seen.add(steps[0] % 3)
        # the next run starts from what this one left: reset to a known start
        shutil.rmtree(tmp_path/'idx')
        EmbeddingIndex(8).add(np.stack([vec(i) for i in range(100)]), [f'v{i}' for i in range(100)]).save(tmp_path/'idx')
    assert len(seen) >= 2, seen                               # killed during appends and during rewrites

def test_kill_during_encode_leaves_the_index_before_or_after(work, tmp_path):
    sets = photo_sets(work, tmp_path, all=9, more=20)
    run_json('encode', work/'model.pt', '--images', 'all', '--out', 'idx', cwd=tmp_path)
    shutil.copytree(tmp_path/'idx', tmp_path/'before')
    for p in (tmp_path/'more').iterdir(): shutil.move(p, tmp_path/'all'/p.name)
    before = sets['all']
    after = sorted(before + [str((tmp_path/'all'/Path(p).name).resolve()) for p in sets['more']])
    rng, states = random.Random(1), []
    for wait in [rng.uniform(1.5, 3.5), rng.uniform(3.5, 5.5), 60]:   # torch loads, the photos are encoded, the index is saved
        shutil.rmtree(tmp_path/'idx'); shutil.copytree(tmp_path/'before', tmp_path/'idx')
        r = encode(work/'model.pt', '--images', 'all', '--out', 'idx', cwd=tmp_path)
        try: r.wait(timeout=wait)
        except subprocess.TimeoutExpired: r.send_signal(signal.SIGKILL); r.wait()
        got = ids_of(tmp_path/'idx')
        assert got in (before, after), len(got)
        states.append(got == after)
    assert states[-1] and run_json('encode', work/'model.pt', '--images', 'all', '--out', 'idx', cwd=tmp_path)['reused'] == 29

def test_an_update_appends_only_the_new_rows(work, tmp_path):
    from phoalign.index import EmbeddingIndex
    sets = photo_sets(work, tmp_path, photos=20, later=3)
    run_json('encode', work/'model.pt', '--images', 'photos', '--out', 'idx', cwd=tmp_path)
    first = EmbeddingIndex.load(tmp_path/'idx')
    vfile = tmp_path/'idx'/json.loads((tmp_path/'idx'/'manifest.json').read_text())['files']['vectors']
    size = vfile.stat().st_size
    for p in (tmp_path/'later').iterdir(): shutil.move(p, tmp_path/'photos'/p.name)
    report = run_json('encode', work/'model.pt', '--images', 'photos', '--out', 'idx', cwd=tmp_path)
    assert (report['encoded'], report['reused'], report['images']) == (3, 20, 23)
    m = json.loads((tmp_path/'idx'/'manifest.json').read_text())
    assert m['files']['vectors'] == vfile.name and vfile.stat().st_size - size == 3 * first.dim * 4   # grew by the new rows only
    assert m['generation'] == first.generation + 1
    second = EmbeddingIndex.load(tmp_path/'idx')
    assert second.ids[:20] == first.ids and np.array_equal(np.asarray(second.vectors[:20]), np.asarray(first.vectors))
    first.add(np.asarray(second.vectors[20:]), second.ids[20:])           # what the appended folder should answer
    q = np.asarray(second.vectors)
    assert second.search(q, 5)[1].tolist() == first.search(q, 5)[1].tolist()
    hits = run_json('search', 'idx', '--image', Path('photos')/Path(sets['later'][0]).name, '-k', '1', cwd=tmp_path)
    assert Path(hits[0]['path']).name == Path(sets['later'][0]).name
