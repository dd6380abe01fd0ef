"""`phoalign encode`, `search` and `tag` as a user runs them: a fresh folder, relative paths, the bundled photos; then
broken files, a moved checkpoint and typos."""
import json, shutil
from pathlib import Path
import pytest
from test_cli_data import phoalign, gallery

def gallery_and_model(root:Path) -> Path:
    "`root` holding a copy of the gallery and `model.pt`, the checkpoint of a tiny model that knows the Vietnamese captions' words."
    from phoalign.testing import tiny_search_model
    from phoalign.model import save_model
    from phoalign.data.formats import read_pairs
    shutil.copytree(gallery, root/'gallery')
    photos = sorted((root/'gallery'/'photos').glob('*.jpg'))
    save_model(tiny_search_model(read_pairs(root/'gallery'/'captions_vi.json').caption, photos), root/'model.pt')
    return root

@pytest.fixture(scope='module')
def work(tmp_path_factory):
    "A fresh folder holding a copy of the gallery and a tiny model's checkpoint."
    return gallery_and_model(tmp_path_factory.mktemp('search'))

def run_main(*args, cwd):
    "`phoalign ARGS` in this process (the error cases: fast, same parser and messages): `(exit code, stdout, stderr)`."
    import contextlib, io, os
    from phoalign.cli import main
    out, err, here = io.StringIO(), io.StringIO(), os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try: code = main([str(a) for a in args])
            except SystemExit as e: code = e.code
    finally: os.chdir(here)
    return code, out.getvalue(), err.getvalue()

def assert_refused(cases, cwd, *command):
    "Each `(args, message)` exits with 2 and a one-line error holding `message`, no traceback."
    for args, message in cases:
        code, _, err = run_main(*command, *args, cwd=cwd)
        assert code == 2 and message in err and 'Traceback' not in err, (args, err)

def run_json(*args, cwd):
    r = phoalign(*args, '--json', cwd=cwd)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)

@pytest.mark.slow
def test_encode_then_search_from_another_folder(work):
    report = run_json('encode', 'model.pt', '--images', 'gallery/captions_vi.json', '--out', 'idx', cwd=work)
    assert (report['images'], report['encoded'], report['reused'], report['skipped']) == (29, 29, 0, [])
    assert report['captions'] >= 29
    (work/'elsewhere').mkdir()
    hits = run_json('search', '../idx', '--text', 'một con mèo nằm trên thảm', '-k', '3', cwd=work/'elsewhere')
    assert len(hits) == 3 and all(Path(h['path']).is_file() and h['caption'] for h in hits)
    assert [h['score'] for h in hits] == sorted((h['score'] for h in hits), reverse=True)
    same = run_json('search', '../idx', '--image', '../gallery/photos/chelsea.jpg', '-k', '1', cwd=work/'elsewhere')
    assert Path(same[0]['path']).name == 'chelsea.jpg' and abs(same[0]['score'] - 1) < 1e-4
    captions = run_json('search', str(work/'idx'), '--image', 'gallery/photos/coffee.jpg', '--captions', '-k', '2', cwd=work)
    assert len(captions) == 2 and all(c['caption'] for c in captions)
    assert all(h['path'].startswith('gallery/photos/') for h in run_json('search', 'idx', '--text', 'con mèo', cwd=work))   # as text mode shows them
    r = phoalign('search', 'idx', '--text', 'một tách cà phê', '--show', 'grid.png', cwd=work)
    assert r.returncode == 0 and (work/'grid.png').stat().st_size > 0, r.stderr
    rank, score, path, *caption = r.stdout.splitlines()[0].split()
    assert rank == '1' and -1 <= float(score) <= 1 and path.startswith('gallery/photos/') and caption, r.stdout

@pytest.mark.slow
def test_encode_is_incremental(work, tmp_path):
    shutil.copytree(work/'gallery'/'photos', tmp_path/'photos')
    first = run_json('encode', work/'model.pt', '--images', 'photos', '--out', 'idx', cwd=tmp_path)
    assert (first['encoded'], first['captions']) == (29, 0)
    again = run_json('encode', work/'model.pt', '--images', 'photos', '--out', 'idx', cwd=tmp_path)
    assert (again['encoded'], again['reused']) == (0, 29)
    shutil.copy(tmp_path/'photos'/'cell.jpg', tmp_path/'photos'/'new.jpg')
    (tmp_path/'photos'/'brick.jpg').unlink()
    (tmp_path/'photos'/'broken.jpg').write_bytes(b'\xff\xd8 not really a jpeg')
    third = run_json('encode', work/'model.pt', '--images', 'photos', '--out', 'idx', cwd=tmp_path)
    assert (third['images'], third['encoded'], third['reused'], third['removed']) == (29, 1, 28, 1)
    assert [Path(s['path']).name for s in third['skipped']] == ['broken.jpg']
    r = phoalign('encode', work/'model.pt', '--images', 'photos', '--out', 'idx', cwd=tmp_path)
    assert r.returncode == 0 and 'left out 1 unreadable image (photos/broken.jpg' in r.stdout, r.stdout + r.stderr
    r = phoalign('search', 'idx', '--image', 'photos/new.jpg', '--captions', cwd=tmp_path)
    assert r.returncode == 2 and 'has no captions' in r.stderr

def test_encode_errors(work, tmp_path):
    (tmp_path/'empty').mkdir()
    (tmp_path/'notes').mkdir(); (tmp_path/'notes'/'todo.txt').write_text('mine')
    cases = [(['encode', 'missing.pt', '--images', work/'gallery'/'photos', '--out', 'idx'], 'missing.pt'),
             (['encode', work/'model.pt', '--images', 'empty', '--out', 'idx'], 'no images'),
             (['encode', work/'model.pt', '--images', 'nowhere', '--out', 'idx'], 'nowhere'),
             (['encode', work/'model.pt', '--images', work/'gallery'/'photos', '--out', 'notes'], 'is not a phoalign index'),
             (['encode', work/'model.pt', '--imgs', 'empty', '--out', 'idx'], 'the following arguments are required: --images'),
             (['encode', work/'model.pt', '--images', 'empty', '--out', 'idx', '--kind', 'lsh'], "invalid choice: 'lsh'"),
             (['encode', work/'model.pt', '--images', 'empty', '--out', 'idx', '--batch-size', '0'], '--batch-size must be at least 1')]
    assert_refused(cases, tmp_path)
    r = phoalign('encode', work/'model.pt', '--images', 'empty', '--out', 'idx', '--kind', 'lsh', cwd=tmp_path)   # as the shell runs it
    assert r.returncode == 2 and "invalid choice: 'lsh'" in r.stderr
    assert (tmp_path/'notes'/'todo.txt').read_text() == 'mine' and not (tmp_path/'idx').exists()

@pytest.mark.slow
def test_another_model_is_refused(work, tmp_path):
    from phoalign.testing import tiny_search_model
    from phoalign.model import save_model
    save_model(tiny_search_model(['một hình tròn'], [gallery/'photos'/'cell.jpg'], seed=1), tmp_path/'other.pt')
    run_json('encode', work/'model.pt', '--images', work/'gallery'/'photos', '--out', 'idx', cwd=tmp_path)
    r = phoalign('encode', 'other.pt', '--images', work/'gallery'/'photos', '--out', 'idx', cwd=tmp_path)
    assert r.returncode == 2 and 'written by another model' in r.stderr and 'model.pt' in r.stderr and 'other.pt' in r.stderr, r.stderr
    assert_refused([(['idx', '--text', 'một hình tròn', '--checkpoint', 'other.pt'], 'written by another model')], tmp_path, 'search')
    assert run_json('encode', 'other.pt', '--images', work/'gallery'/'photos', '--out', 'idx', '--overwrite', cwd=tmp_path)['encoded'] == 29

@pytest.mark.slow
def test_search_errors(work, tmp_path):
    shutil.copy(work/'model.pt', tmp_path/'model.pt')
    run_json('encode', 'model.pt', '--images', work/'gallery'/'captions_vi.json', '--out', 'idx', cwd=tmp_path)
    cases = [(['idx'], 'give a query'),
             (['idx', '--text', 'mèo', '--image', 'x.jpg'], 'x.jpg: image file not found'),   # both: a composed query
             (['idx', '--text', 'mèo', '--image', 'x.jpg', '--captions'], 'searches images, not --captions'),
             (['idx', '--text', '  '], 'the query is empty'),
             (['idx', '--image', 'nope.jpg'], 'nope.jpg: image file not found'),
             (['idx', '--text', 'mèo', '-k', '0'], '-k must be at least 1'),
             (['nowhere', '--text', 'mèo'], 'no such index folder'),
             (['idx', '--txt', 'mèo'], 'unrecognized arguments: --txt')]
    assert_refused(cases, tmp_path, 'search')
    r = phoalign('search', 'idx', '--text', 'a black cat on a mat', cwd=tmp_path)   # English words the tower never saw: a warning
    assert r.returncode == 0 and 'warning' in r.stderr and 'never in the training captions' in r.stderr
    shutil.copytree(tmp_path/'idx', tmp_path/'cut')
    vectors = next((tmp_path/'cut').glob('vectors-*.npy')); vectors.write_bytes(vectors.read_bytes()[:64])
    assert_refused([(['cut', '--text', 'mèo'], 'damaged')], tmp_path, 'search')
    (tmp_path/'cut'/'manifest.json').unlink()
    assert_refused([(['cut', '--text', 'mèo'], 'interrupted')], tmp_path, 'search')
    (tmp_path/'model.pt').rename(tmp_path/'moved.pt')
    r = phoalign('search', 'idx', '--text', 'mèo', cwd=tmp_path)
    assert r.returncode == 2 and 'is gone' in r.stderr and '--checkpoint' in r.stderr
    assert run_json('search', 'idx', '--text', 'con mèo', '--checkpoint', 'moved.pt', cwd=tmp_path)

@pytest.mark.slow
def test_tag_an_index_and_a_folder(work, tmp_path):
    run_json('encode', work/'model.pt', '--images', work/'gallery'/'captions_vi.json', '--out', 'idx', cwd=tmp_path)
    labels = ['mèo', 'tên lửa', 'cà phê', 'phi hành gia']
    (tmp_path/'labels.txt').write_text('# nhãn ảnh\n' + '\n'.join(labels[:2]) + '\n\n' + '\n'.join(labels[2:]) + '\n', encoding='utf-8')
    from_index = run_json('tag', 'idx', '--labels', 'labels.txt', '-k', '2', cwd=tmp_path)
    assert len(from_index) == 29 and all(len(t['tags']) == 2 and set(t['tags']) <= set(labels) for t in from_index)
    assert all(1 >= t['scores'][0] >= t['scores'][1] >= 0 for t in from_index)
    from_folder = run_json('tag', work/'gallery'/'photos', '--labels', 'labels.txt', '-k', '2', '--checkpoint', work/'model.pt', cwd=tmp_path)
    assert {Path(t['path']).name: t['tags'] for t in from_folder} == {Path(t['path']).name: t['tags'] for t in from_index}
    r = phoalign('tag', 'idx', '--labels', 'labels.txt', cwd=tmp_path)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 30 and '(0.' in r.stdout, r.stdout + r.stderr
    assert r.stdout.startswith("scores: softmax of ") and "the model's logit scale" in r.stdout.splitlines()[0], r.stdout   # says how it scored
    (tmp_path/'empty.txt').write_text('# nothing\n\n', encoding='utf-8')
    cases = [(['idx', '--labels', 'nolabels.txt'], 'nolabels.txt'),
             (['idx', '--labels', 'empty.txt'], 'empty.txt'),
             (['idx', '--labels', 'labels.txt', '-k', '5'], 'there are only 4 labels'),
             (['idx', '--labels', 'labels.txt', '--templates', 'fr'], 'fr'),
             ([work/'gallery'/'photos', '--labels', 'labels.txt'], 'pass --checkpoint'),
             (['idx', '--lables', 'labels.txt'], 'required: --labels')]
    assert_refused(cases, tmp_path, 'tag')

def main_json(*args, cwd):
    "`phoalign ARGS --json` in this process, its output parsed."
    code, out, err = run_main(*args, '--json', cwd=cwd)
    assert code == 0, out + err
    return json.loads(out)

def test_approximate_index_reports_the_recall_it_measured(work, tmp_path):
    "`encode --kind ivf --recall` tunes on the gallery's captions; the manifest, `encode --json` and `search --json` say what was measured, and on what."
    shutil.copy(work/'model.pt', tmp_path/'model.pt'); shutil.copytree(work/'gallery', tmp_path/'gallery')
    report = main_json('encode', 'model.pt', '--images', 'gallery/captions_vi.json', '--out', 'idx', '--kind', 'ivf', '--recall', '0.9', cwd=tmp_path)
    queries = f'captions ({report["captions"]})'
    assert (report['kind'], report['images'], report['recall_k'], report['recall_queries']) == ('ivf', 29, 10, queries), report
    assert 0.9 <= report['recall'] <= 1
    manifest = json.loads((tmp_path/'idx'/'manifest.json').read_text(encoding='utf-8'))
    assert (manifest['recall'], manifest['recall_queries'], manifest['tuned']['target'], manifest['count']) == (report['recall'], queries, 0.9, 29)
    hits = main_json('search', 'idx', '--text', 'một con mèo nằm trên thảm', '-k', '3', cwd=tmp_path)
    assert len(hits) == 3 and all((h['recall'], h['recall_k'], h['recall_queries']) == (report['recall'], 10, queries) for h in hits), hits
    code, out, err = run_main('encode', 'model.pt', '--images', 'gallery/photos', '--out', 'photos-idx', '--kind', 'hnsw', '--no-progress', cwd=tmp_path)
    assert code == 0 and 'hnsw index (recall@10 ' in out and 'on held-out images (2))' in out, out + err   # no captions
    hit, = main_json('search', 'photos-idx', '--image', 'gallery/photos/cell.jpg', '-k', '1', cwd=tmp_path)
    assert Path(hit['path']).name == 'cell.jpg' and hit['recall_queries'] == 'held-out images (2)', hit   # held out, then added
    main_json('encode', 'model.pt', '--images', 'gallery/photos', '--out', 'flat-idx', cwd=tmp_path)
    hit, = main_json('search', 'flat-idx', '--image', 'gallery/photos/cell.jpg', '-k', '1', cwd=tmp_path)
    assert 'recall' not in hit                                  # exact search: nothing to qualify

def test_recall_target_out_of_range_is_refused(work, tmp_path):
    "A recall target outside (0, 1] is refused in one line before the model is loaded; nothing is written."
    cases = [(['--recall', '1.5'], '--recall is a share of the exact top-10: give a value in (0, 1], got 1.5'),
             (['--recall', '0'], 'in (0, 1], got 0.0'), (['--recall', 'nan'], 'in (0, 1], got nan'),
             (['--recall', 'most'], "invalid float value: 'most'")]
    assert_refused([([work/'model.pt', '--images', work/'gallery'/'photos', '--out', 'idx', '--kind', 'ivf', *args], msg) for args, msg in cases],
                   tmp_path, 'encode')
    assert not (tmp_path/'idx').exists()
    code, _, err = run_main('encode', work/'model.pt', '--images', work/'gallery'/'photos', '--out', 'idx', '--recall', '1.5', cwd=tmp_path)
    assert code == 2 and err.splitlines() == ['phoalign: error: --recall is a share of the exact top-10: give a value in (0, 1], got 1.5'], err

def test_encode_refuses_a_damaged_caption_file_or_skips_its_rows(work, tmp_path):
    photos = sorted((work/'gallery'/'photos').glob('*.jpg'))[:4]
    rows = [f'{p},"ảnh số {i}"' for i, p in enumerate(photos)]
    rows[1] = f'{photos[1]},"ảnh số 1'             # a quote left open: without the check it swallows the rows after it
    (tmp_path/'caps.csv').write_text('image,caption\n' + '\n'.join(rows) + '\n', encoding='utf-8')
    r = phoalign('encode', work/'model.pt', '--images', 'caps.csv', '--out', 'idx', cwd=tmp_path)
    assert r.returncode == 2 and 'caps.csv' in r.stderr and 'row 3' in r.stderr and 'Traceback' not in r.stderr, r.stdout + r.stderr
    assert not (tmp_path/'idx').exists()            # refused before anything was written
    report = run_json('encode', work/'model.pt', '--images', 'caps.csv', '--out', 'idx', '--strict', 'false', cwd=tmp_path)
    assert (report['images'], report['rows_skipped']) == (3, 1), report
    r = phoalign('encode', work/'model.pt', '--images', 'caps.csv', '--out', 'idx2', '--strict', 'false', cwd=tmp_path)
    assert r.returncode == 0 and 'left out 1 rows of the caption file' in r.stdout, r.stdout + r.stderr
