"""The `phoalign` console script as a user runs it: a subprocess, exit codes, stdout and stderr."""
import json, subprocess, sys, shutil
from pathlib import Path
import pytest

repo = Path(__file__).resolve().parents[1]
gallery = repo/'images'

def phoalign(*args, cwd=None):
    exe = shutil.which('phoalign') or pytest.fail('the `phoalign` console script is not installed (pip install -e ".[dev]")')
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600)

def test_help_lists_every_command():
    from phoalign.cli import COMMANDS
    r = phoalign('--help')
    assert r.returncode == 0, r.stderr
    for name in COMMANDS: assert f'phoalign {name} ' in r.stdout

def test_version():
    import phoalign as pkg
    r = phoalign('--version')
    assert r.returncode == 0 and pkg.__version__ in r.stdout

@pytest.mark.parametrize('caption_file', ['captions_vi.json', 'captions_en.json', 'captions_vi.jsonl', 'captions_en.csv', 'captions_vi.tsv'])
def test_data_check_gallery(caption_file):
    r = phoalign('data', 'check', gallery/caption_file, '--json')
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    for key in ['format', 'rows', 'images', 'captions', 'missing_images', 'unreadable_images', 'empty_captions']: assert key in report
    assert report['images'] >= 20 and report['rows'] >= report['images']
    assert report['missing_images'] == report['unreadable_images'] == report['empty_captions'] == []

def test_data_check_reports_bad_rows(tmp_path):
    shutil.copy(gallery/'captions_vi.tsv', tmp_path/'caps.tsv')
    first_image = (tmp_path/'caps.tsv').read_text(encoding='utf-8').splitlines()[0].split('\t')[0]
    (tmp_path/'images').mkdir()
    lines = [f'{gallery/first_image}\tmột con mèo', f'{tmp_path/"gone.jpg"}\tảnh không còn', f'{tmp_path/"images"/"zero.jpg"}\tảnh rỗng',
             f'{gallery/first_image}\t   ']
    (tmp_path/'images'/'zero.jpg').write_bytes(b'')
    (tmp_path/'caps.tsv').write_text('\n'.join(lines) + '\n', encoding='utf-8')
    r = phoalign('data', 'check', tmp_path/'caps.tsv', '--json')
    assert r.returncode == 1, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert [Path(p).name for p in report['missing_images']] == ['gone.jpg']
    assert [Path(u['image']).name for u in report['unreadable_images']] == ['zero.jpg']
    assert len(report['empty_captions']) == 1
    human = phoalign('data', 'check', tmp_path/'caps.tsv')
    assert human.returncode == 1 and 'gone.jpg' in human.stdout and 'zero.jpg' in human.stdout

def test_data_check_errors_name_the_file(tmp_path):
    r = phoalign('data', 'check', tmp_path/'nothing.json')
    assert r.returncode == 2 and 'nothing.json' in r.stderr
    (tmp_path/'broken.json').write_text('{"images": [1, 2', encoding='utf-8')
    r = phoalign('data', 'check', tmp_path/'broken.json')
    assert r.returncode == 2 and 'broken.json' in r.stderr
    r = phoalign('data', 'check', gallery/'captions_vi.json', '--format', 'nope')
    assert r.returncode == 2 and 'nope' in r.stderr and 'coco' in r.stderr
    assert 'Traceback' not in r.stderr

def test_data_demo(tmp_path):
    r = phoalign('data', 'demo', '--out', tmp_path/'demo', '--n', '200')
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path/'demo'/'preview.png').stat().st_size > 0
    assert 'train' in r.stdout and 'test' in r.stdout

def test_data_synth_cirr(tmp_path):
    r = phoalign('data', 'synth', '--out', tmp_path/'s', '--n', '60', '--cirr')
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path/'s'/'captions_en.json').exists() and (tmp_path/'s'/'captions_vi.json').exists()
    assert list((tmp_path/'s'/'cirr'/'captions').glob('cap.rc2.*.json'))
