"""`phoalign encode` under torchrun as a user runs it: two CPU processes (gloo) write the same index as one, an update
encodes only the new images, and two "nodes" whose index folders are not shared stop with an error and change nothing."""
import json, os, shutil, socket, subprocess, sys
from pathlib import Path
import numpy as np
import pytest

TORCHRUN = str(Path(sys.executable).parent/'torchrun')
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1'}

def phoalign(*args, cwd, nproc=1, node=None, port=None) -> subprocess.Popen:
    "`phoalign ARGS` in `cwd` as a started process: alone, under torchrun with `nproc` processes, or as node `node` of two."
    if node is not None: exe = [TORCHRUN, '--nnodes', '2', '--node_rank', str(node), '--nproc_per_node', '1', '--master_addr', '127.0.0.1',
                                '--master_port', str(port), '-m', 'phoalign']
    elif nproc > 1: exe = [TORCHRUN, '--nproc_per_node', str(nproc), '-m', 'phoalign']
    else: exe = [shutil.which('phoalign') or pytest.fail('the `phoalign` console script is not installed')]
    return subprocess.Popen([*exe, *map(str, args)], cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

def done(p:subprocess.Popen, rc:int=0) -> str:
    "The stdout of `p`, which must exit with `rc`."
    out, err = p.communicate(timeout=300)
    assert p.returncode == rc, out[-2000:] + err[-4000:]
    return out

def free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def add_images(folder:Path, src:Path, n:int, prefix:str):
    "Copy `n` images of `src` into `folder` under new names."
    for p in sorted(src.glob('*.png'))[:n]: shutil.copy(p, folder/f'{prefix}{p.name}')

@pytest.fixture(scope='module')
def made(tmp_path_factory):
    "A synthetic gallery (`s/images`), 8 more images (`more/images`) and a tiny untrained model (`model.pt`)."
    root = tmp_path_factory.mktemp('made')
    done(phoalign('data', 'synth', '--out', 's', '--n', '40', '--lang', 'vi', cwd=root))
    done(phoalign('data', 'synth', '--out', 'more', '--n', '8', '--lang', 'vi', '--seed', '1', cwd=root))
    from phoalign.testing import tiny_search_model
    from phoalign.model import save_model
    from phoalign.data.formats import read_pairs
    save_model(tiny_search_model(read_pairs(root/'s'/'captions_vi.json').caption, sorted((root/'s'/'images').glob('*.png'))), root/'model.pt')
    return root

@pytest.fixture
def work(made, tmp_path):
    "A fresh folder holding a copy of `made`."
    shutil.copytree(made, tmp_path, dirs_exist_ok=True)
    return tmp_path

def encode_here(work:Path, out:str) -> dict:
    "A one-process encode of `s/images` into `out`, in this process (the baseline the torchrun runs are compared with)."
    from phoalign.model import load_model
    from phoalign.search import encode_gallery
    return encode_gallery(load_model(work/'model.pt'), work/'s'/'images', work/out, checkpoint=work/'model.pt', progress=False)

def search(index:Path) -> list:
    "`phoalign search INDEX --text ... --json`, run in this process."
    import contextlib, io
    from phoalign.cli import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out): code = main(['search', str(index), '--text', 'hình tròn màu đỏ', '-k', '5', '--json'])
    assert code == 0, out.getvalue()
    return json.loads(out.getvalue())

def same_index(a:Path, b:Path):
    "The two index folders hold the same rows in the same order, the same metadata, and vectors equal to float tolerance."
    from phoalign.index import EmbeddingIndex
    x, y = EmbeddingIndex.load(a), EmbeddingIndex.load(b)
    assert x.ids == y.ids and len(x) > 0
    assert x.meta.drop(columns='id').astype(str).equals(y.meta.drop(columns='id').astype(str))
    np.testing.assert_allclose(x.vectors, y.vectors, atol=1e-5)
    assert not [p.name for p in b.iterdir() if 'encode-part' in p.name]            # the parts are gone

def test_two_process_encode_writes_the_index_one_process_writes(work):
    one = json.loads(done(phoalign('encode', 'model.pt', '--images', 's/images', '--out', 'one', '--json', cwd=work)))
    out = done(phoalign('encode', 'model.pt', '--images', 's/images', '--out', 'two', '--json', cwd=work, nproc=2))
    assert len(out.splitlines()) == 1, out                                         # one report: the first process's
    two = json.loads(out)
    assert (two['images'], two['encoded'], two['reused'], two['processes'], one['processes']) == (40, 40, 0, 2, 1)
    same_index(work/'one', work/'two')
    hits = [search(work/idx) for idx in ('one', 'two')]
    assert [h['path'] for h in hits[0]] == [h['path'] for h in hits[1]] and len(hits[0]) == 5
    np.testing.assert_allclose([h['score'] for h in hits[0]], [h['score'] for h in hits[1]], atol=1e-5)
    # an update: 7 new images and one modified; only those are encoded, split over the two processes, and said once
    add_images(work/'s'/'images', work/'more'/'images', 7, 'new_')
    touched = sorted((work/'s'/'images').glob('shapes_*.png'))[3]
    os.utime(touched, ns=(touched.stat().st_mtime_ns + 10**9,) * 2)
    out = done(phoalign('encode', 'model.pt', '--images', 's/images', '--out', 'two', '--no-progress', cwd=work, nproc=2))
    assert out.count('encoded 8 by 2 processes, reused 39') == 1 and len(out.splitlines()) == 1, out
    again = encode_here(work, 'one')
    assert (again['images'], again['encoded'], again['reused']) == (47, 8, 39)
    same_index(work/'one', work/'two')

def test_two_process_encode_on_nodes_without_a_shared_index_folder_changes_nothing(work):
    "Two nodes (one torchrun each, in different folders): node 1's relative --out is another folder, so its part never reaches node 0."
    encode_here(work, 'idx')
    before = {p.name: p.read_bytes() for p in (work/'idx').iterdir() if p.is_file() and p.name != '.lock'}
    add_images(work/'s'/'images', work/'more'/'images', 4, 'new_')
    (work/'node1').mkdir()
    port, args = free_port(), ['encode', work/'model.pt', '--images', work/'s'/'images', '--out', 'idx', '--no-progress']
    n1 = phoalign(*args, cwd=work/'node1', node=1, port=port)
    n0 = phoalign(*args, cwd=work, node=0, port=port)
    (out0, err0), (_, err1) = n0.communicate(timeout=300), n1.communicate(timeout=300)
    assert n0.returncode != 0 and n1.returncode != 0 and not out0
    assert 'is not here: a run on several nodes needs the index folder on storage that all of them share (nothing was changed)' in err0, err0[-3000:]
    assert 'process 0 of 2 failed while merging the parts into the index' in err1, err1[-3000:]
    after = {p.name: p.read_bytes() for p in (work/'idx').iterdir() if p.is_file() and p.name != '.lock'}
    assert after == before                                                         # the index as it was, no part left
    assert list((work/'node1').iterdir()) == []                                    # node 1 took its part back (and the folder it made)

def test_two_process_encode_of_shards_writes_the_index_one_process_writes(work):
    """Webdataset shards (`phoalign data shard` of the synthetic set, every split) split over two processes: the index one process writes;
    an update encodes only a touched tar's samples; a truncated tar is refused, naming it, and the index stays as it was."""
    done(phoalign('data', 'shard', 's/captions_vi.json', '--out', 'shards', '--shard-size', '8', cwd=work))
    m = json.loads((work/'shards'/'shards.json').read_text())
    one = json.loads(done(phoalign('encode', 'model.pt', '--images', 'shards', '--out', 'one', '--json', cwd=work)))
    two = json.loads(done(phoalign('encode', 'model.pt', '--images', 'shards', '--out', 'two', '--json', cwd=work, nproc=2)))
    assert (two['images'], two['encoded'], two['processes'], one['images'], one['processes']) == (m['samples'], m['samples'], 2, 40, 1)
    assert two['captions'] == one['captions'] >= 40 and len(m['splits']) > 1                       # every split, its captions too
    same_index(work/'one', work/'two')
    hits = [search(work/idx) for idx in ('one', 'two')]
    assert [h['path'] for h in hits[0]] == [h['path'] for h in hits[1]] and all('.tar/' in h['path'] for h in hits[0]), hits
    # a touched tar: only its samples are encoded, split over the two processes; the rest is reused
    tar = work/'shards'/m['splits']['train']['shards'][1]['file']
    n = m['splits']['train']['shards'][1]['samples']
    os.utime(tar, ns=(tar.stat().st_mtime_ns + 10**9,) * 2)
    out = done(phoalign('encode', 'model.pt', '--images', 'shards', '--out', 'two', '--no-progress', cwd=work, nproc=2))
    assert out.count(f'encoded {n} by 2 processes, reused {40 - n}') == 1, out
    from phoalign.model import load_model
    from phoalign.search import encode_gallery
    again = encode_gallery(load_model(work/'model.pt'), work/'shards', work/'one', checkpoint=work/'model.pt', progress=False)
    assert (again['encoded'], again['reused']) == (n, 40 - n)
    same_index(work/'one', work/'two')
    # a tar cut short: both processes refuse it, naming it; nothing in the index changes
    before = {p.name: p.read_bytes() for p in (work/'two').iterdir() if p.is_file() and p.name != '.lock'}
    tar.write_bytes(tar.read_bytes()[:5000])
    p = phoalign('encode', 'model.pt', '--images', 'shards', '--out', 'two', '--no-progress', cwd=work, nproc=2)
    out, err = p.communicate(timeout=300)
    assert p.returncode != 0 and f'{tar.name}: truncated' in err, err[-3000:]
    assert {p.name: p.read_bytes() for p in (work/'two').iterdir() if p.is_file() and p.name != '.lock'} == before
