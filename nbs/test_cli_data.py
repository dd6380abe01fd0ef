"""`phoalign data check` on real layouts, run as a user runs it: relative paths, the simple JSON list, reports by file and row."""
import json, os, re, subprocess, shutil
from pathlib import Path
import pytest

repo = Path(__file__).resolve().parents[1]
gallery = repo/'images'

def phoalign(*args, cwd=None):
    exe = shutil.which('phoalign') or pytest.fail('the `phoalign` console script is not installed (pip install -e ".[dev]")')
    env = {**os.environ, 'HF_HUB_OFFLINE': '1'}
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600, env=env)

def check(*args, cwd=None, rc=0) -> dict:
    "The JSON report of `phoalign data check ARGS --json`, which must exit with `rc`."
    r = phoalign('data', 'check', *args, '--json', cwd=cwd)
    assert r.returncode == rc, r.stdout + r.stderr
    return json.loads(r.stdout)

def test_gallery_folder_from_repo_root():
    # the README's own example: a relative folder (captions/ + photos/) named from the repository root
    report = check('images', cwd=repo)
    assert report['format'] == 'folder' and report['images'] == 29 and report['ok'], report
    assert report['missing_images'] == report['unreadable_images'] == []

@pytest.mark.parametrize('name', ['.', 'captions_vi.json', 'captions_en.json', 'captions_vi.jsonl', 'captions_en.csv', 'captions_vi.tsv'])
def test_relative_paths_from_another_folder(tmp_path, name):
    shutil.copytree(gallery, tmp_path/'gallery')
    (tmp_path/'elsewhere').mkdir()
    report = check(Path('..')/'gallery'/name, cwd=tmp_path/'elsewhere')
    assert report['ok'] and report['images'] == 29, report

def test_images_root_relative(tmp_path):
    shutil.copytree(gallery/'photos', tmp_path/'pics')
    (tmp_path/'caps').mkdir()
    lines = (gallery/'captions_vi.tsv').read_text(encoding='utf-8').replace('photos/', '')
    (tmp_path/'caps'/'vi.tsv').write_text(lines, encoding='utf-8')
    report = check('caps/vi.tsv', '--images', 'pics', cwd=tmp_path)
    assert report['ok'] and report['images'] == 29, report

def test_simple_json_list(tmp_path):
    (tmp_path/'photos').mkdir()
    for n in ('astronaut.jpg', 'coffee.jpg'): shutil.copy(gallery/'photos'/n, tmp_path/'photos'/n)
    items = [{'image': 'photos/astronaut.jpg', 'caption': ['Một phi hành gia.', 'Chân dung phi hành gia.']},
             {'image': 'photos/coffee.jpg', 'caption': 'Một tách cà phê.'}]
    (tmp_path/'list.json').write_text(json.dumps(items, ensure_ascii=False), encoding='utf-8')
    report = check('list.json', cwd=tmp_path)
    assert (report['format'], report['rows'], report['images'], report['ok']) == ('coco', 3, 2, True)

def test_same_file_name_in_two_folders_is_two_images(tmp_path):
    for d, n in (('a', 'astronaut.jpg'), ('b', 'coffee.jpg')):
        (tmp_path/d).mkdir(); shutil.copy(gallery/'photos'/n, tmp_path/d/'1.jpg')
    (tmp_path/'caps.tsv').write_text('a/1.jpg\tmột phi hành gia\nb/1.jpg\tmột tách cà phê\na/1.jpg\tphi hành gia\n', encoding='utf-8')
    report = check('caps.tsv', cwd=tmp_path)
    assert (report['rows'], report['images'], report['ok']) == (3, 2, True)

def test_missing_and_unreadable_images_by_file_and_row(tmp_path):
    shutil.copy(gallery/'photos'/'astronaut.jpg', tmp_path/'ok.jpg')
    (tmp_path/'zero.jpg').write_bytes(b'')
    (tmp_path/'caps.tsv').write_text('ok.jpg\tmột\ngone.jpg\thai\nzero.jpg\tba\nok.jpg\tbốn\ngone.jpg\tnăm\n', encoding='utf-8')
    report = check('caps.tsv', cwd=tmp_path, rc=1)
    assert report['missing_images'] == [dict(image=str((tmp_path/'gone.jpg').resolve()), file='caps.tsv', rows=[2, 5],
                                             reason='image file not found')]
    [u] = report['unreadable_images']
    assert (Path(u['image']).name, u['file'], u['rows'], u['reason']) == ('zero.jpg', 'caps.tsv', [3], 'image file is empty (0 bytes)')
    human = phoalign('data', 'check', 'caps.tsv', cwd=tmp_path)
    assert human.returncode == 1
    assert f'caps.tsv rows 2, 5: {(tmp_path/"gone.jpg").resolve()}: image file not found' in human.stdout, human.stdout
    assert f'caps.tsv row 3: {(tmp_path/"zero.jpg").resolve()}: image file is empty (0 bytes)' in human.stdout, human.stdout

def test_folder_rows_are_caption_file_lines(tmp_path):
    shutil.copytree(gallery, tmp_path/'g')
    (tmp_path/'g'/'photos'/'horse.jpg').write_bytes(b'')
    report = check('g', cwd=tmp_path, rc=1)
    [u] = report['unreadable_images']
    assert (u['file'], u['rows']) == (str(Path('g')/'captions'/'horse.txt'), [1, 2]), u

def write_images(folder:Path, names):
    "Small distinct images under `folder`, one per name (the suffix gives the format)."
    import numpy as np, cv2
    folder.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(names):
        img = np.full((32, 32, 3), (i * 37) % 256, np.uint8); img[:, :i % 32 + 1] = 255 - (i * 11) % 256
        assert cv2.imwrite(str(folder/n), img)

def test_a_quote_left_open_is_named_not_read_as_one_caption(tmp_path):
    "The issue's printf example: `data check` said '1 pairs ... OK' and exited 0, rows 3-4 swallowed into one caption."
    write_images(tmp_path, ['a.png', 'b.png', 'c.png'])
    (tmp_path/'t.csv').write_bytes(b'image,caption\na.png,"oops\nb.png,hai\nc.png,ba\n')
    human = phoalign('data', 'check', 't.csv', cwd=tmp_path)
    assert human.returncode == 1 and human.stderr == '', human.stdout + human.stderr    # a report, not a warning
    assert 't.csv (csv): 2 pairs, 2 images, 2 captions' in human.stdout, human.stdout
    assert 't.csv row 2: a quote opened on line 2 is never closed: lines 2-4 would be read as one row' in human.stdout, human.stdout
    assert 'OK' not in human.stdout
    report = check('t.csv', cwd=tmp_path, rc=1)
    assert [(d['file'], d['row'], d['kind']) for d in report['damaged_rows']] == [('t.csv', 2, 'open_quote')]

def test_thirty_rows_with_a_quote_left_open(tmp_path):
    "A 30-row file whose row 6 (line 7) opens a quote: the other 29 rows are read, the damaged one is named by file and row."
    write_images(tmp_path/'img', [f'{i}.png' for i in range(1, 31)])
    rows = [f'img/{i}.png,' + (f'"ảnh số {i}' if i == 6 else f'ảnh số {i}') for i in range(1, 31)]
    (tmp_path/'thirty.csv').write_text('image,caption\n' + '\n'.join(rows) + '\n', encoding='utf-8')
    human = phoalign('data', 'check', 'thirty.csv', cwd=tmp_path)
    assert human.returncode == 1, human.stdout + human.stderr
    assert 'thirty.csv (csv): 29 pairs, 29 images, 29 captions' in human.stdout, human.stdout
    assert 'thirty.csv row 7: a quote opened on line 7 is never closed: lines 7-31 would be read as one row' in human.stdout, human.stdout
    report = check('thirty.csv', cwd=tmp_path, rc=1)
    assert (report['rows'], [d['row'] for d in report['damaged_rows']], report['missing_images'], report['unreadable_images']) == (29, [7], [], [])

def test_cleaning_settings_are_counted(tmp_path):
    "Hand-written captions with HTML, doubled spaces, duplicates, a one-word and an overlong caption: each data setting's effect is counted."
    write_images(tmp_path/'img', ['a.png', 'b.png', 'c.png'])
    long = ' '.join(['một con chó chạy trên bãi cỏ xanh'] * 6)                     # 48 words
    rows = [('a.png', '<b>Một con mèo</b> đang ngủ'), ('a.png', 'Một  con mèo   đang ngủ'), ('b.png', 'chó'), ('b.png', long),
            ('c.png', 'con chim &amp; tổ'), ('c.png', 'con chim đỏ trên cành'), ('a.png', 'Một con mèo đang ngủ')]
    (tmp_path/'caps.tsv').write_text(''.join(f'img/{i}\t{c}\n' for i, c in rows), encoding='utf-8')
    counts = lambda r: (r['rows'], r['cleaning'])
    zero = dict(html=0, whitespace=0, empty=0, duplicates=0, too_short=0, too_long=0, max_samples=0)
    assert counts(check('caps.tsv', cwd=tmp_path)) == (7, {**zero, 'html': 2, 'whitespace': 1})           # the defaults: [html, whitespace]
    over = ['data.clean=[html,whitespace,duplicates]', 'data.min_caption_words=2', 'data.max_caption_words=40']
    assert counts(check('caps.tsv', *over, 'data.max_samples=2', cwd=tmp_path)) == (2, {**zero, 'html': 2, 'whitespace': 1, 'duplicates': 2,
                                                                                        'too_short': 1, 'too_long': 1, 'max_samples': 1})
    human = phoalign('data', 'check', 'caps.tsv', '--no-decode', *over, cwd=tmp_path)                  # settings after an option too
    assert human.returncode == 0, human.stdout + human.stderr
    assert ('caps.tsv (tsv): 3 pairs, 2 images, 3 captions\ncleaning: captions changed: html 2, whitespace 1; '
            'rows dropped: 4 of 7 (duplicates 2, too_short 1, too_long 1)\n') in human.stdout, human.stdout
    for bad, said in (('data.max_sample=5', "unknown key 'data.max_sample' (did you mean 'data.max_samples'?)"),
                      ('data.clean=[htm]', "data.clean=['htm'] names 'htm' (did you mean 'html'?)"),
                      ('train.epochs=2', 'phoalign data check takes data settings only')):
        r = phoalign('data', 'check', 'caps.tsv', bad, '--json', cwd=tmp_path)
        assert r.returncode == 2 and r.stdout == '' and said in r.stderr and 'Traceback' not in r.stderr, (bad, r.stderr)

@pytest.mark.slow
def test_train_with_max_samples(tmp_path):
    "`phoalign train` reads the data settings too: data.max_samples=60 of 200 pairs leaves fewer training images, and says so."
    assert phoalign('data', 'synth', '--out', 's', '--n', '40', '--lang', 'vi', cwd=tmp_path).returncode == 0
    caps = json.loads((tmp_path/'s'/'captions_vi.json').read_text(encoding='utf-8'))
    train_images = sum(im.get('split') == 'train' for im in caps['images'])
    r = phoalign('train', 'tiny', 'data.path=s/captions_vi.json', 'data.max_samples=60', 'train.epochs=1', 'train.output_dir=run',
                 'train.batch_size=16', '--no-progress', cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    n = len(caps['annotations'])
    assert f's/captions_vi.json: cleaning: no caption changed; rows dropped: {n - 60} of {n} (max_samples {n - 60})' in r.stdout, r.stdout
    seen = int(re.search(r'\btrain: (\d+) images', r.stdout).group(1))
    assert 0 < seen < train_images, (seen, train_images, r.stdout)
