"""The `phoalign` console script as a user runs it: a subprocess, exit codes, stdout and stderr."""
import json, subprocess, sys, shutil
import torch
from pathlib import Path
import pytest
from test_cli_data import write_images

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
    assert [Path(m['image']).name for m in report['missing_images']] == ['gone.jpg']
    assert report['missing_images'][0]['rows'] == [2]
    assert [Path(u['image']).name for u in report['unreadable_images']] == ['zero.jpg']
    assert len(report['empty_captions']) == 1
    human = phoalign('data', 'check', tmp_path/'caps.tsv')
    assert human.returncode == 1 and 'gone.jpg' in human.stdout and 'zero.jpg' in human.stdout

@pytest.mark.slow
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

RECALL_KEYS = ['i2t_r1', 'i2t_r5', 'i2t_r10', 't2i_r1', 't2i_r5', 't2i_r10', 'rsum']

def test_demo(tmp_path):
    r = phoalign('demo', '--out', tmp_path/'demo', '--n', '400', '--epochs', '2')
    assert r.returncode == 0, r.stdout + r.stderr
    metrics = json.loads((tmp_path/'demo'/'metrics.json').read_text())
    assert list(metrics) == RECALL_KEYS and 0 <= metrics['t2i_r5'] <= 100
    for name in ('best.pt', 'last.pt', 'curves.png', 'metrics.csv'): assert (tmp_path/'demo'/name).stat().st_size > 0
    assert 'top-5 captions' in r.stdout and 'top-5 images' in r.stdout and 'R@5' in r.stdout

@pytest.mark.slow
def test_train_then_eval(tmp_path):
    assert phoalign('data', 'synth', '--out', tmp_path/'s', '--n', '200', '--lang', 'en').returncode == 0
    r = phoalign('train', 'tiny', f'data.path={tmp_path/"s"/"captions_en.json"}', 'train.epochs=1', f'train.output_dir={tmp_path/"run"}', '--no-progress')
    assert r.returncode == 0, r.stdout + r.stderr
    ev = phoalign('eval', tmp_path/'run'/'best.pt', '--data', tmp_path/'s'/'captions_en.json', '--json')
    assert ev.returncode == 0, ev.stderr
    result = json.loads(ev.stdout)
    assert list(result)[:len(RECALL_KEYS)] == RECALL_KEYS and result['split'] == 'test' and result['images'] > 0
    again = phoalign('eval', tmp_path/'run'/'best.pt', '--data', tmp_path/'s'/'captions_en.json', '--json')
    assert again.stdout == ev.stdout                                        # the same held-out split, the same numbers
    bad = phoalign('eval', tmp_path/'run'/'best.pt', '--data', tmp_path/'s'/'captions_en.json', '--split', 'dev')
    assert bad.returncode == 2 and "no 'dev' split" in bad.stderr

def test_train_errors(tmp_path):
    r = phoalign('train', 'tiny', 'train.epoch=2')
    assert r.returncode == 2 and "did you mean 'epochs'" in r.stderr
    r = phoalign('train', 'tiny', 'train.epochs=1')
    assert r.returncode == 2 and 'data.path is not set' in r.stderr
    r = phoalign('eval', tmp_path/'none.pt', '--data', gallery/'captions_vi.json')
    assert r.returncode == 2 and 'none.pt' in r.stderr


@pytest.mark.slow
def test_train_in_a_fresh_folder_with_two_processes(tmp_path):
    "The issue's reproduction: torchrun, 2 CPU processes, the tiny preset with the clip head, relative paths, the default device."
    assert phoalign('data', 'synth', '--out', 'shapes', '--n', '120', '--lang', 'vi', cwd=tmp_path).returncode == 0
    (tmp_path/'clip.yaml').write_text('model: {preset: tiny, head: clip, options: {head: {}}}\n'
                                      'train: {epochs: 2, batch_size: 16, output_dir: run}\n', encoding='utf-8')
    torchrun = Path(sys.executable).parent/'torchrun'
    r = subprocess.run([str(torchrun), '--nproc_per_node', '2', '-m', 'phoalign', 'train', 'clip.yaml', 'data.path=shapes/captions_vi.json',
                        'train.precision=no', '--no-progress'], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count('epoch 2:') == 1, r.stdout               # printed once, by the main process
    metrics = json.loads((tmp_path/'run'/'metrics.json').read_text())
    assert list(metrics)[:len(RECALL_KEYS)] == RECALL_KEYS
    rows = [json.loads(l) for l in (tmp_path/'run'/'metrics.jsonl').read_text().splitlines()]
    assert [(row['epoch'], row.get('split')) for row in rows] == [(1, None), (2, None), (2, 'test')]   # the epochs, then the test split
    assert torch.load(tmp_path/'run'/'last.pt', weights_only=True)['processes'] == 2   # one run of two processes, not two runs
    ev = phoalign('eval', 'run', '--data', 'shapes/captions_vi.json', cwd=tmp_path)   # a run folder: its best.pt
    assert ev.returncode == 0 and 'test split of' in ev.stdout and 'captions' in ev.stdout, ev.stderr
    again = phoalign('train', 'clip.yaml', 'data.path=shapes/captions_vi.json', cwd=tmp_path)   # the folder is in use
    assert again.returncode == 2 and '--resume' in again.stderr and '--overwrite' in again.stderr and 'Traceback' not in again.stderr

@pytest.mark.slow
def test_settings_are_checked(tmp_path):
    for over, msg in [('train.epochs=abc', 'expected a whole number'), ('train.epochs=1.5', 'whole number'),
                      ('train.epochs=0', 'at least 1'), ('data.image_size=abc', 'data.image_size'),
                      ('model.head=linear', "does not take 'dropout'"), ('train.monitor=rsun', 'train.monitor'),
                      ('loss.name=multiscale', 'local_dim')]:
        r = phoalign('train', 'tiny', over, 'data.path=x.json', cwd=tmp_path)
        assert r.returncode == 2 and msg in r.stderr and 'Traceback' not in r.stderr, (over, r.stderr)
    r = phoalign('eval', gallery/'captions_vi.json', '--data', gallery/'captions_vi.json')
    assert r.returncode == 2 and 'not a phoalign checkpoint' in r.stderr and 'weights_only' not in r.stderr, r.stderr

@pytest.mark.slow
def test_resume_and_overwrite(tmp_path):
    assert phoalign('data', 'synth', '--out', 's', '--n', '80', '--lang', 'en', cwd=tmp_path).returncode == 0
    args = ['train', 'tiny', 'data.path=s/captions_en.json', 'train.epochs=1', 'train.output_dir=run', 'train.batch_size=16', '--no-progress']
    assert phoalign(*args, cwd=tmp_path).returncode == 0
    r = phoalign(*args[:3], 'train.epochs=2', *args[4:], '--resume', 'last', cwd=tmp_path)
    assert r.returncode == 0 and 'resumed from' in r.stdout and 'epoch 2:' in r.stdout and 'epoch 1:' not in r.stdout, r.stdout + r.stderr
    logged = lambda: [(row['epoch'], row.get('split')) for row in map(json.loads, (tmp_path/'run'/'metrics.jsonl').read_text().splitlines())]
    assert logged() == [(1, None), (2, None), (2, 'test')]        # the first run's test row made way for the resumed run's
    r = phoalign(*args, '--overwrite', cwd=tmp_path)
    assert r.returncode == 0 and logged() == [(1, None), (1, 'test')]
    bad = phoalign('train', 'tiny', 'data.path=s/captions_en.json', 'train.output_dir=run', 'model.embed_dim=64', '--resume', 'last', cwd=tmp_path)
    assert bad.returncode == 2 and 'does not fit this model' in bad.stderr and 'Traceback' not in bad.stderr, bad.stderr

def test_python_m_and_closed_pipe(tmp_path):
    r = subprocess.run([sys.executable, '-m', 'phoalign', '--version'], capture_output=True, text=True)
    assert r.returncode == 0 and 'phoalign' in r.stdout
    exe = shutil.which('phoalign')
    r = subprocess.run(f'"{exe}" config show phoclip | head -n 2', shell=True, capture_output=True, text=True)
    assert r.stdout.count('\n') == 2 and 'Traceback' not in r.stderr and 'BrokenPipe' not in r.stderr, r.stderr


@pytest.mark.slow
def test_config_show_prints_every_workflow_under_the_names_its_command_reads(tmp_path):
    "What `config show` prints is what the workflow's command takes: the cifar-vit preset's train.epochs works with cifar train."
    import yaml
    shown = yaml.safe_load(phoalign('config', 'show', 'cifar-vit').stdout)
    assert shown['train']['epochs'] == 20 and shown['model']['freeze'] == ['text_tower'] and shown['model']['embed_dim'] is None
    cifar = yaml.safe_load(phoalign('config', 'show', '--workflow', 'cifar', 'train.epochs=3').stdout)
    assert cifar['train']['epochs'] == 3 and cifar['data']['different_class_prob'] == 0.5
    assert yaml.safe_load(phoalign('config', 'show', '--workflow', 'cifar', 'training.epochs=4').stdout)['train']['epochs'] == 4   # the seed's name
    heads = yaml.safe_load(phoalign('config', 'show', '--workflow', 'heads', 'mlp', 'training.learning_rate=3e-4').stdout)
    assert heads['training']['learning_rate'] == 3e-4
    cir = yaml.safe_load(phoalign('config', 'show', '--workflow', 'cir-combiner', 'train.epochs=7').stdout)
    assert (cir['train']['epochs'], cir['train']['monitor'], cir['train']['schedule']) == (7, 'arithmetic_mean', 'constant')
    fine = yaml.safe_load(phoalign('config', 'show', '--workflow', 'cir-finetune', 'clip-rn50x4').stdout)
    assert fine['train']['freeze_bn'] is True and fine['model']['image_tower'] == 'openclip/RN50x4'
    (tmp_path/'c.json').write_text(json.dumps({'training': {'num_epochs': 2}}))
    assert yaml.safe_load(phoalign('config', 'show', '--workflow', 'cifar', str(tmp_path/'c.json')).stdout)['train']['epochs'] == 2
    for args, msg in ((('--workflow', 'cifar', 'train.epoch=3'), "did you mean 'epochs'"), (('--workflow', 'cir-finetune'), 'needs a config'),
                      (('--workflow', 'cifr', 'x'), "invalid choice: 'cifr'"), (('tiny', 'model.freeze=[text_towr]'), "did you mean 'text_tower'")):
        r = phoalign('config', 'show', *args)
        assert r.returncode == 2 and msg in r.stderr and 'Traceback' not in r.stderr, (args, r.stderr)

@pytest.mark.slow
def test_device_is_a_setting_of_every_scoring_command(tmp_path):
    "eval and tag take --device: the CPU works, an accelerator that is not there is one line of error, a typo too."
    import torch
    assert phoalign('data', 'synth', '--out', 's', '--n', '60', '--lang', 'en', cwd=tmp_path).returncode == 0
    assert phoalign('train', 'tiny', 'data.path=s/captions_en.json', 'train.epochs=1', 'train.output_dir=run', 'train.batch_size=16', '--no-progress',
                    cwd=tmp_path).returncode == 0
    ok = phoalign('eval', 'run', '--data', 's/captions_en.json', '--device', 'cpu', '--json', cwd=tmp_path)
    assert ok.returncode == 0 and json.loads(ok.stdout)['images'] > 0, ok.stderr
    (tmp_path/'labels.txt').write_text('circle\nsquare\n')
    tagged = phoalign('tag', 's/images', '--checkpoint', 'run', '--labels', 'labels.txt', '-k', '1', '--device', 'cpu', '--json', cwd=tmp_path)
    assert tagged.returncode == 0 and json.loads(tagged.stdout), tagged.stderr
    missing = [] if torch.cuda.is_available() else [(('eval', 'run', '--data', 's/captions_en.json', '--device', 'cuda'), 'CUDA is not available'),
                                                    (('tag', 's/images', '--checkpoint', 'run', '--labels', 'labels.txt', '-k', '1', '--device', 'cuda'), 'CUDA is not available')]
    for args, msg in missing + [(('eval', 'run', '--data', 's/captions_en.json', '--device', 'gpu0'), "use 'auto', 'cpu'")]:
        r = phoalign(*args, cwd=tmp_path)
        assert r.returncode == 2 and msg in r.stderr and 'Traceback' not in r.stderr, (args, r.stderr)

@pytest.mark.slow
def test_train_refuses_a_damaged_file_unless_data_strict_false(tmp_path):
    "A quote left open on row 6 of 30: training stops naming the row; data.strict=false skips it, counts it and trains on the 29 others."
    write_images(tmp_path/'img', [f'{i}.png' for i in range(1, 31)])
    rows = [f'img/{i}.png,' + (f'"ảnh số {i}' if i == 6 else f'ảnh số {i} màu {i * 7 % 30}') for i in range(1, 31)]
    (tmp_path/'thirty.csv').write_text('image,caption\n' + '\n'.join(rows) + '\n', encoding='utf-8')
    args = ['train', 'tiny', 'data.path=thirty.csv', 'train.epochs=1', 'train.output_dir=run', 'train.batch_size=16', '--no-progress']
    r = phoalign(*args, cwd=tmp_path)
    assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stdout + r.stderr
    assert ('thirty.csv: 1 damaged row, read otherwise than the file says:\n  row 7: a quote opened on line 7 is never closed: '
            'lines 7-31 would be read as one row') in r.stderr and 'data.strict=false' in r.stderr, r.stderr
    assert not (tmp_path/'run').exists()                            # refused before anything was written
    ok = phoalign(*args, 'data.strict=false', cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert 'thirty.csv: skipped 1 row (1 damaged)\n  row 7: a quote opened on line 7' in ok.stdout, ok.stdout
    assert 'skipped 1 row' not in ok.stderr                          # a line of the report, not a warning
    assert 'train: 23 images' in ok.stdout and 'rows of thirty.csv skipped while reading: 1' in ok.stdout, ok.stdout
    ev = phoalign('eval', 'run', '--data', 'thirty.csv', cwd=tmp_path)   # the run's data.strict=false
    assert ev.returncode == 0 and 'skipped 1 row (1 damaged)' in ev.stdout and 'test split of thirty.csv: 3 images' in ev.stdout, ev.stdout + ev.stderr
    strict = phoalign('eval', 'run', '--data', 'thirty.csv', '--strict', 'true', cwd=tmp_path)
    assert strict.returncode == 2 and 'thirty.csv (row 7): a quote opened on line 7' in strict.stderr, strict.stderr

@pytest.mark.slow
def test_skipped_images_of_every_split_are_reported(tmp_path):
    "Three text files named .jpg among 33 rows, one in each split: each split's count and first paths, in metrics.jsonl and the summary."
    names = [f'{i:02d}.jpg' for i in range(33)]
    split = lambda i: 'train' if i < 23 else 'val' if i < 28 else 'test'
    fakes = (0, 23, 28)                                              # the first image of each split
    write_images(tmp_path/'img', [n for i, n in enumerate(names) if i not in fakes])
    for i in fakes: (tmp_path/'img'/names[i]).write_text('a text file, whatever its name says')
    (tmp_path/'set.jsonl').write_text(''.join(json.dumps({'image': f'img/{n}', 'caption': f'ảnh số {i} màu {i * 7 % 33}', 'split': split(i)},
                                                         ensure_ascii=False) + '\n' for i, n in enumerate(names)), encoding='utf-8')
    r = phoalign('train', 'tiny', 'data.path=set.jsonl', 'train.epochs=1', 'train.output_dir=run', 'train.batch_size=16', '--no-progress', cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    named = lambda xs: [Path(x['image']).name for x in xs]
    epoch, test = [json.loads(l) for l in (tmp_path/'run'/'metrics.jsonl').read_text().splitlines()]
    assert (epoch['train_skipped'], named(epoch['train_skipped_images'])) == (1, ['00.jpg']), epoch
    assert (epoch['val_skipped'], named(epoch['val_skipped_images']), epoch['val_images']) == (1, ['23.jpg'], 4), epoch
    assert (test['split'], test['test_skipped'], named(test['test_skipped_images']), test['test_images']) == ('test', 1, ['28.jpg'], 4), test
    metrics = json.loads((tmp_path/'run'/'metrics.json').read_text())
    assert (metrics['skipped'], named(metrics['skipped_images']), metrics['images']) == (1, ['28.jpg'], 4), metrics
    assert 'test split (4 images, 4 captions; 1 unreadable image left out)' in r.stdout, r.stdout
    assert 'unreadable images skipped: train 1, val 1, test 1' in r.stdout, r.stdout
    for s, i in zip(('train', 'val', 'test'), fakes): assert f'  {s}: {Path("img")/names[i]}: ' in r.stdout, r.stdout
    ev = phoalign('eval', 'run', '--data', 'set.jsonl', '--split', 'val', cwd=tmp_path)
    assert ev.returncode == 0 and 'val split of set.jsonl: 4 images, 4 captions; 1 unreadable image left out' in ev.stdout, ev.stdout + ev.stderr
    assert 'unreadable images skipped: val 1' in ev.stdout and f'  val: {Path("img")/"23.jpg"}: ' in ev.stdout, ev.stdout
    js = json.loads(phoalign('eval', 'run', '--data', 'set.jsonl', '--json', cwd=tmp_path).stdout)
    assert (js['split'], js['images'], js['skipped'], named(js['skipped_images'])) == ('test', 4, 1, ['28.jpg']), js
