"""A new user's first hour, as issue 22 found it: nothing overwritten unasked, warnings where a figure means little."""
import hashlib, shutil, subprocess
from pathlib import Path
import pytest

def phoalign(*args, cwd=None):
    exe = shutil.which('phoalign') or pytest.fail('the `phoalign` console script is not installed (pip install -e ".[dev]")')
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600)

def digest(path:Path) -> str: return hashlib.sha256(path.read_bytes()).hexdigest()

@pytest.mark.slow
def test_demo_refuses_a_used_folder(tmp_path):
    r = phoalign('demo', '--out', 'demo', '--n', '200', '--epochs', '1', cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    before = {p.relative_to(tmp_path): digest(p) for p in (tmp_path/'demo').rglob('*') if p.is_file()}
    again = phoalign('demo', '--out', 'demo', '--n', '200', '--epochs', '1', cwd=tmp_path)
    assert again.returncode != 0 and 'Traceback' not in again.stderr, again.stdout + again.stderr
    assert 'demo is not empty' in again.stderr and '--out demo-2' in again.stderr and '--overwrite' in again.stderr, again.stderr
    after = {p.relative_to(tmp_path): digest(p) for p in (tmp_path/'demo').rglob('*') if p.is_file()}
    assert after == before                      # not a byte changed: the first demo's checkpoint (and any index built on it) stays valid
    r = phoalign('demo', '--out', 'demo', '--n', '200', '--epochs', '1', '--overwrite', cwd=tmp_path)
    assert r.returncode == 0 and digest(tmp_path/'demo'/'best.pt') != before[Path('demo/best.pt')], r.stdout + r.stderr

@pytest.mark.slow
def test_eval_warns_on_captions_the_model_never_saw(tmp_path):
    for lang in ('en', 'vi'): assert phoalign('data', 'synth', '--out', lang, '--n', '200', '--lang', lang, cwd=tmp_path).returncode == 0
    r = phoalign('train', 'tiny', 'data.path=en/captions_en.json', 'train.epochs=1', 'train.output_dir=run', '--no-progress', cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    same = phoalign('eval', 'run', '--data', 'en/captions_en.json', cwd=tmp_path)
    assert same.returncode == 0 and 'warning' not in same.stderr, same.stdout + same.stderr
    other = phoalign('eval', 'run', '--data', 'vi/captions_vi.json', cwd=tmp_path)
    assert other.returncode == 0 and 'R@' in other.stdout, other.stdout + other.stderr
    assert 'warning:' in other.stderr and 'never in the training captions' in other.stderr and 'chance level' in other.stderr, other.stderr
