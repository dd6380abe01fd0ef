"""`phoalign train ... train.batch_size=auto` as a user runs it: the largest batch that fits, logged, kept by a resume.

Running out of memory is simulated: a `sitecustomize.py` put first on PYTHONPATH makes the training step raise the CPU
allocator's out-of-memory error above `OOM_ABOVE` samples (`OOM_ABOVE_RANK1` for the second process of a torchrun run).
"""
import os, re, subprocess, sys, shutil
from pathlib import Path
import pytest, torch
from test_cli_search import run_main

HOOK = '''import os
limit = os.environ.get('OOM_ABOVE_RANK1') if os.environ.get('RANK') == '1' else os.environ.get('OOM_ABOVE')
if limit:
    import phoalign.train as T
    step = T.PairsTask.compute_loss
    def compute_loss(self, model, batch):
        if len(batch['image']) > int(limit):
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to allocate 8589934592 bytes.")
        return step(self, model, batch)
    T.PairsTask.compute_loss = compute_loss
'''

def phoalign(*args, cwd, oom=None, torchrun=False, **limits):
    "Run `phoalign ARGS` in `cwd` (under torchrun with 2 processes when asked), out of memory above `oom` samples."
    (Path(cwd)/'hook').mkdir(exist_ok=True); (Path(cwd)/'hook'/'sitecustomize.py').write_text(HOOK)
    env = {k: v for k, v in os.environ.items() if not k.startswith('OOM_ABOVE')}
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(Path(cwd)/'hook'), env.get('PYTHONPATH')])), OMP_NUM_THREADS='1')
    if oom is not None: env['OOM_ABOVE'] = str(oom)
    env.update({f'OOM_ABOVE_{k.upper()}': str(v) for k, v in limits.items()})
    exe = ([str(Path(sys.executable).parent/'torchrun'), '--nproc_per_node', '2', '-m', 'phoalign'] if torchrun else
           [shutil.which('phoalign') or pytest.fail('the `phoalign` console script is not installed')])
    return subprocess.run([*exe, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)

def ck(path): return torch.load(path, weights_only=False, map_location='cpu')

ARGS = ['train', 'tiny', 'data.path=s/captions_en.json', 'train.output_dir=run', 'train.epochs=1', '--no-progress']

@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    "80 synthetic pairs written once by `phoalign data synth`."
    d = tmp_path_factory.mktemp('shapes')
    assert phoalign('data', 'synth', '--out', 's', '--n', '80', '--lang', 'en', cwd=d).returncode == 0
    return d/'s'

@pytest.fixture
def synth(shapes, tmp_path):
    "A fresh folder holding a copy of the pairs as `s/`."
    shutil.copytree(shapes, tmp_path/'s')
    return tmp_path

def test_auto_finds_the_largest_batch_that_fits_and_a_resume_keeps_it(synth):
    r = phoalign(*ARGS, 'train.batch_size=auto', cwd=synth, oom=20)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    m = re.search(r'batch size auto: (\d+) \(tried ([\d, ]+)\)', r.stdout)
    assert m, r.stdout
    found, tried = int(m.group(1)), [int(x) for x in m.group(2).split(', ')]
    assert tried[-1] == found and all(b > 20 for b in tried[:-1]) and found <= 20 < 2 * found   # halved until it fits: the largest under 20
    assert all(b == a // 2 for a, b in zip(tried, tried[1:])) and len(tried) >= 2
    last = ck(synth/'run'/'last.pt')
    assert last['batch_size'] == found and last['config']['train']['batch_size'] == found   # the run records the number
    again = phoalign(*ARGS[:4], 'train.epochs=2', *ARGS[5:], 'train.batch_size=auto', '--resume', 'last', cwd=synth)   # memory to spare now
    assert again.returncode == 0 and 'epoch 2:' in again.stdout, again.stdout[-2000:] + again.stderr[-3000:]
    assert 'batch size auto' not in again.stdout and ck(synth/'run'/'last.pt')['batch_size'] == found   # the run's size, not probed again

def test_a_number_is_used_as_given_and_bad_values_are_refused(synth):
    r = phoalign(*ARGS, 'train.batch_size=32', cwd=synth, oom=20)   # a number is not searched: the step runs out of memory
    assert r.returncode != 0 and "can't allocate memory" in r.stderr and 'batch size auto' not in r.stdout
    fits = phoalign(*ARGS, 'train.batch_size=16', '--overwrite', cwd=synth, oom=20)
    assert fits.returncode == 0 and ck(synth/'run'/'last.pt')['batch_size'] == 16, fits.stderr[-3000:]
    for bad in ('big', '0', '-3'):   # the refusals in this process: the same parser and messages, without a command's start-up each
        code, _, err = run_main(*ARGS, f'train.batch_size={bad}', cwd=synth)
        assert code == 2 and 'train.batch_size=' in err and 'Traceback' not in err, (bad, err)
    code, _, err = run_main(*ARGS, 'train.batch_size=auto', 'train.batch_size_start=0', cwd=synth)
    assert code == 2 and 'train.batch_size_start=0 must be at least 1' in err, err

@pytest.mark.slow
def test_two_processes_agree_on_the_smallest(synth):
    "torchrun, 2 CPU processes (gloo): the second has less memory; both train with its size."
    r = phoalign(*ARGS, 'train.batch_size=auto', 'train.precision=no', cwd=synth, torchrun=True, oom=1000, rank1=10)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    found = [int(x) for x in re.findall(r'batch size auto: (\d+)', r.stdout)]
    assert len(found) == 1 and found[0] <= 10, r.stdout                 # logged once, the second process's size
    last = ck(synth/'run'/'last.pt')
    assert (last['batch_size'], last['processes']) == (found[0], 2)
