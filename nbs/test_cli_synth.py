"""`phoalign data synth` as a user runs it: a fresh folder, relative paths; the CIRR triplets' count, the paths and the
next command it prints, paired-CIFAR data with --cifar, and what it refuses."""
import pytest
import json, shlex
from pathlib import Path
from test_cli_data import phoalign

def _triplets(root:Path) -> int:
    return sum(len(json.loads(p.read_text())) for p in (root/'cirr'/'captions').glob('cap.rc2.*.json'))

@pytest.mark.slow
def test_cirr_default_and_given_triplets(tmp_path):
    r = phoalign('data', 'synth', '--out', 'shapes', '--n', '200', '--size', '32', '--cirr', cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].endswith('-> shapes/captions_en.json, shapes/captions_vi.json'), lines   # plain relative paths, not [PosixPath(...)]
    assert lines[1].startswith('100 composed-retrieval triplets (train ') and lines[1].endswith('in the CIRR layout -> shapes/cirr'), lines
    assert lines[2] == 'next: phoalign cir finetune --dataset CIRR --data-path shapes', lines
    assert _triplets(tmp_path/'shapes') == 100                                            # the default: half of --n
    assert len(json.loads((tmp_path/'shapes'/'captions_en.json').read_text())['images']) == 200
    r = phoalign('data', 'synth', '--out', 'few', '--n', '200', '--size', '32', '--cirr', '--triplets', '30', cwd=tmp_path)
    assert r.returncode == 0 and _triplets(tmp_path/'few') == 30, r.stdout + r.stderr
    plain = phoalign('data', 'synth', '--out', 'plain', '--n', '50', '--size', '32', '--lang', 'vi', cwd=tmp_path)
    assert plain.returncode == 0 and plain.stdout.strip().endswith('-> plain/captions_vi.json') and 'next:' not in plain.stdout, plain.stdout

@pytest.mark.slow
def test_refused(tmp_path):
    for args, message in ((['--triplets', '10'], '--triplets is the number of CIRR triplets: add --cirr'),
                          (['--cirr', '--n', '100', '--triplets', '51'], '--triplets must be 1 to 50 (half of --n 100)'),
                          (['--cifar', 'c', '--cirr', '--size', '32'], 'which --size and --cirr do not apply to'),
                          (['--cifar', 'c', '--out', 'o'], 'which --out does not apply to'),
                          (['--cifar', 'c', '--n', '0'], 'n_train must be at least 1')):
        r = phoalign('data', 'synth', *args, cwd=tmp_path)
        assert r.returncode == 2 and message in r.stderr and 'Traceback' not in r.stderr, (args, r.stderr)
    assert not (tmp_path/'c').exists() and not (tmp_path/'outputs').exists()             # nothing written
    real = tmp_path/'real'/'cifar-100-python'; real.mkdir(parents=True)
    (real/'train').write_bytes(b'the real CIFAR-100, say')
    r = phoalign('data', 'synth', '--cifar', 'real', cwd=tmp_path)
    assert r.returncode == 2 and 'did not write' in r.stderr and (real/'train').read_bytes() == b'the real CIFAR-100, say', r.stderr

def test_cifar_with_spaces_prints_a_command_that_runs(tmp_path):
    r = phoalign('data', 'synth', '--cifar', 'my data', '--n', '100', '--seed', '3', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    command = shlex.split(r.stdout.split('next: ')[1].splitlines()[0])
    assert command[command.index('--data-dir') + 1] == 'my data' and 'model.options.text.name_or_path=my data/toy-clip' in command, command
    assert (tmp_path/'my data'/'toy-clip'/'config.json').is_file()
    from phoalign.cifar import read_cifar100
    other = phoalign('data', 'synth', '--cifar', 'seed0', '--n', '100', cwd=tmp_path)
    assert other.returncode == 0
    assert (read_cifar100(tmp_path/'my data').images != read_cifar100(tmp_path/'seed0').images).any()   # --seed changes the images
