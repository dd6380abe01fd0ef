"""`phoalign cir ...` run as a user runs it: a fresh folder, relative paths, both stages, validation, the CIRR submission,
composed search over an index; hand-written CIRR and FashionIQ folders (real layouts, the gallery's photos); broken files and typos."""
import json, shutil, subprocess, sys
from pathlib import Path
import pytest
from test_cli_data import phoalign, gallery
from test_cli_search import run_main, assert_refused

def ok(*args, cwd):
    r = phoalign(*args, cwd=cwd)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r

@pytest.fixture(scope='module')
def work(tmp_path_factory):
    "A fresh folder with the synthetic CIRR triplets, a stage-1 run (s1/) and a stage-2 MoE run (s2/), all by the CLI."
    root = tmp_path_factory.mktemp('cir')
    ok('data', 'synth', '--out', 'shapes', '--n', '600', '--size', '32', '--lang', 'en', '--cirr', cwd=root)
    ok('cir', 'finetune', '--dataset', 'cirr', '--data-path', 'shapes', '--num-epochs', '2', '--batch-size', '16', '--learning-rate', '1e-3',
       '--output-dir', 's1', '--no-progress', cwd=root)
    ok('cir', 'combiner', '--dataset', 'CIRR', '--data-path', 'shapes', '--clip-model-path', 's1', '--combining-function', 'moe',
       '--projection-dim', '64', '--hidden-dim', '128', '--num-epochs', '3', '--batch-size', '16', '--combiner-lr', '1e-3',
       '--output-dir', 's2', '--no-progress', cwd=root)
    return root

@pytest.mark.slow
def test_two_stages_write_their_runs(work):
    rows = [json.loads(l) for l in (work/'s1'/'metrics.jsonl').read_text().splitlines()]
    assert [r['epoch'] for r in rows] == [1, 2] and 'val_avg' in rows[0] and (work/'s1'/'best.pt').is_file()
    rows = [json.loads(l) for l in (work/'s2'/'metrics.jsonl').read_text().splitlines()]
    assert [r['epoch'] for r in rows] == [1, 2, 3] and 'expert0_share' in rows[0], rows[0]
    assert (work/'s2'/'combiner_best.pt').is_file()

@pytest.mark.slow
def test_validate_matches_the_best_epoch(work):
    r = ok('cir', 'validate', '--dataset', 'CIRR', '--data-path', 'shapes', '--clip-model-path', 's1', '--combining-function', 'moe',
           '--combiner-path', 's2/combiner_best.pt', '--json', cwd=work)
    metrics = json.loads(r.stdout)
    rows = [json.loads(l) for l in (work/'s2'/'metrics.jsonl').read_text().splitlines()]
    best = max(rows, key=lambda row: row['val_arithmetic_mean'])   # CIRR's best epoch: the mean of the seven recalls, as CLIP4Cir picks it
    assert metrics['arithmetic_mean'] == pytest.approx(best['val_arithmetic_mean']) and metrics['avg'] == pytest.approx(best['val_avg'])
    summed = json.loads(ok('cir', 'validate', '--dataset', 'CIRR', '--data-path', 'shapes', '--clip-model-path', 's1', '--json', cwd=work).stdout)
    assert set(summed) == set(metrics)
    sub = work/'elsewhere'; sub.mkdir(exist_ok=True)   # the combiner alone: its towers are the ones it records (s1/best.pt, found from any folder)
    alone = json.loads(ok('cir', 'validate', '--dataset', 'CIRR', '--data-path', '../shapes', '--combining-function', 'moe',
                          '--combiner-path', '../s2/combiner_best.pt', '--json', '--device', 'cpu', cwd=sub).stdout)
    assert alone == metrics

def test_submission_files(work):
    from phoalign.cir.metrics import check_cirr_submission
    ok('cir', 'submit', '--data-path', 'shapes', '--clip-model-path', 's1', '--combining-function', 'moe', '--combiner-path', 's2',
       '--submission-name', 'shapes', '--out', 'sub', cwd=work)
    pairs = [e['pairid'] for e in json.loads((work/'shapes'/'cirr'/'captions'/'cap.rc2.test1.json').read_text())]
    assert check_cirr_submission(work/'sub'/'recall_submission_shapes.json', pairs)['metric'] == 'recall'
    assert check_cirr_submission(work/'sub'/'recall_subset_submission_shapes.json', pairs)['metric'] == 'recall_subset'

@pytest.mark.slow
def test_composed_search_over_an_index(work):
    ok('encode', 's1/best.pt', '--images', 'shapes/dev', '--out', 'idx', '--no-progress', cwd=work)
    entry = json.loads((work/'shapes'/'cirr'/'captions'/'cap.rc2.val.json').read_text())[0]
    ref = f'shapes/dev/{entry["reference"]}.png'
    hits = json.loads(ok('search', 'idx', '--image', ref, '--text', entry['caption'], '--combiner', 's2/combiner_best.pt', '-k', '5', '--json', cwd=work).stdout)
    assert len(hits) == 5 and not any(Path(h['path']).name == Path(ref).name for h in hits)   # the reference is no answer
    summed = json.loads(ok('search', 'idx', '--image', ref, '--text', entry['caption'], '-k', '5', '--json', cwd=work).stdout)
    assert [h['path'] for h in summed] != [h['path'] for h in hits]   # the combiner changes the answer

def test_typos_and_broken_files_are_refused(work):
    assert_refused([(('--dataset', 'CIRRR', '--data-path', 'shapes'), "invalid choice: 'CIRRR'"),
                    (('--dataset', 'CIRR', '--data-path', 'shapez'), 'not a CIRR folder'),
                    (('--dataset', 'CIRR', '--data-path', 'shapes', '--combining-function', 'moe'), 'needs --combiner-path'),
                    (('--dataset', 'CIRR', '--data-path', 'shapes', '--combiner-path', 's2/combiner_best.pt'), 'not sum'),
                    (('--dataset', 'CIRR', '--data-path', 'shapes', '--clip-model-path', 's1', '--combining-function', 'combiner',
                      '--combiner-path', 's2/combiner_best.pt'), "holds a 'moe' combiner"),
                    (('--dataset', 'CIRR', '--data-path', 'shapes', '--clip-model-name', 'tiny', '--combining-function', 'moe', '--combiner-path',
                      's2/combiner_best.pt'), 'was written by another model'),   # the combiner was trained on s1's towers, not fresh tiny ones
                    (('--dataset', 'CIRR', '--data-path', 'shapes'), 'name the towers to score with'),   # no random towers scored in silence
                    (('--dataset', 'CIRR', '--data-path', 'shapes', '--split', 'test'), "invalid choice: 'test'"),
                    (('--dataset', 'FashionIQ', '--data-path', 'shapes'), 'not a FashionIQ folder'),
                    (('--dataset', 'CIRR', '--data-path', 'shapes', '--categories', 'dress'), 'CIRR has none'),
                    (('--dataset', 'CIRR', '--data-path', 'shapes', '--transform', 'squarepad', '--target-ratio', '1.5'), "targetpad transform's")],
                   work, 'cir', 'validate')
    assert_refused([(('--combining-function', 'combiner', '--num-experts', '8'), 'is a MoE option'),
                    (('--combining-function', 'sum'), "invalid choice: 'sum'"),
                    (('--output-dir', 's2'), 'already holds a run'),
                    (('--output-dir', 's9', '--set', 'train.epoch=2'), "unknown key 'epoch' (did you mean 'epochs'?)"),
                    (('--output-dir', 's9', '--set', 'train.lr_head=1e-3'), 'train.lr_head: composed retrieval trains'),
                    (('--output-dir', 's9', '--resume', 'latest'), 'no checkpoint in s9'),
                    (('--output-dir', 's2', '--resume', 'latest', '--overwrite'), 'contradict')], work, 'cir', 'combiner', '--dataset', 'CIRR', '--data-path', 'shapes',
                   '--clip-model-path', 's1', '--no-progress', '--num-epochs', '1', '--projection-dim', '16', '--hidden-dim', '16')
    assert_refused([(('--combiner', 's2/combiner_best.pt', '--text', 'a circle'), '--combiner combines a reference image')], work, 'search', 'idx')
    broken = work/'broken'; shutil.copytree(work/'shapes', broken)
    (broken/'cirr'/'captions'/'cap.rc2.val.json').write_text('[{"pairid": 0, "reference":', encoding='utf-8')
    assert_refused([(('--dataset', 'CIRR', '--data-path', 'broken'), 'cap.rc2.val.json: not valid JSON')], work, 'cir', 'validate')

def _hand_written_cirr(root:Path) -> Path:
    "The released CIRR layout, written by hand: the gallery's photos as dev images, three triplets, an image missing."
    photos = sorted((gallery/'photos').glob('*.jpg'))
    names = [f'dev-{i}-0-img{i % 2}' for i in range(len(photos))]
    (root/'dev'/'7').mkdir(parents=True); (root/'cirr'/'captions').mkdir(parents=True); (root/'cirr'/'image_splits').mkdir()
    for n, p in zip(names, photos): shutil.copy(p, root/'dev'/'7'/f'{n}.png')
    (root/'dev'/'7'/f'{names[5]}.png').unlink()   # named by the split file, not on disk
    (root/'cirr'/'image_splits'/'split.rc2.val.json').write_text(json.dumps({n: f'./dev/7/{n}.png' for n in names}, indent=1))
    caps = [{"pairid": 12063, "reference": names[0], "target_hard": names[1], "target_soft": {names[1]: 1.0},
             "caption": "show the same animal lying down", "img_set": {"id": 3, "members": names[:6]}},
            {"pairid": 12064, "reference": names[2], "target_hard": names[3], "target_soft": {names[3]: 1.0},
             "caption": "more people in the picture", "img_set": {"id": 4, "members": names[2:8]}},
            {"pairid": 12065, "reference": names[4], "target_hard": names[5], "target_soft": {names[5]: 1.0},
             "caption": "zoomed out", "img_set": {"id": 5, "members": names[4:10]}}]
    (root/'cirr'/'captions'/'cap.rc2.val.json').write_text(json.dumps(caps, indent=1))
    return root

def test_hand_written_cirr_and_fashioniq(work):
    _hand_written_cirr(work/'cirr_hand')
    r = ok('cir', 'validate', '--dataset', 'CIRR', '--data-path', 'cirr_hand/cirr', '--clip-model-path', 's1', '--json', cwd=work)
    assert json.loads(r.stdout)['recall_at50'] == 100.0   # 2 queries, 28 images: every target is in the top 50
    assert 'skipped 1 triplets whose images are missing' in r.stderr, r.stderr
    fiq = work/'fiq'; (fiq/'images').mkdir(parents=True); (fiq/'captions').mkdir(); (fiq/'image_splits').mkdir()
    photos = sorted((gallery/'photos').glob('*.jpg'))
    for k, p in enumerate(photos[:10]): shutil.copy(p, fiq/'images'/f'B00{k:05d}.png')
    names = [f'B00{k:05d}' for k in range(11)]   # the last one is missing, as some released FashionIQ images are
    (fiq/'image_splits'/'split.dress.val.json').write_text(json.dumps(names))
    (fiq/'captions'/'cap.dress.val.json').write_text(json.dumps(
        [{"target": names[k + 1], "candidate": names[k], "captions": ["is darker", "has a cat on it."]} for k in range(10)]))
    r = ok('cir', 'validate', '--dataset', 'fashioniq', '--data-path', 'fiq', '--categories', 'dress', '--clip-model-path', 's1', '--json', cwd=work)
    metrics = json.loads(r.stdout)
    assert {'dress_recall_at10', 'dress_recall_at50', 'recall_at10', 'avg'} <= set(metrics) and metrics['dress_recall_at50'] == 100.0
    assert 'skipped 1 triplets' in r.stderr, r.stderr

@pytest.mark.slow
def test_finetune_with_two_processes(tmp_path, work):
    "torchrun, 2 CPU processes: one run (one log line per epoch), on relative paths."
    torchrun = Path(sys.executable).parent/'torchrun'
    r = subprocess.run([str(torchrun), '--nproc_per_node', '2', '-m', 'phoalign', 'cir', 'finetune', '--dataset', 'CIRR', '--data-path',
                        str(work/'shapes'), '--num-epochs', '2', '--batch-size', '8', '--output-dir', 'run', '--no-progress'],
                       capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count('finetune epoch 2/2') == 1, r.stdout
    assert [json.loads(l)['epoch'] for l in (tmp_path/'run'/'metrics.jsonl').read_text().splitlines()] == [1, 2]


@pytest.mark.slow
def test_ctrl_c_then_resume(work):
    "Ctrl-C during stage 1: exit 130, no traceback, a hint; `--resume latest` continues the run to its last epoch."
    import signal, time
    base = ['cir', 'finetune', '--dataset', 'CIRR', '--data-path', 'shapes', '--batch-size', '16', '--learning-rate', '1e-3', '--output-dir', 'stopped', '--no-progress']
    p = subprocess.Popen([sys.executable, '-m', 'phoalign', *base, '--num-epochs', '40'], cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))   # Ctrl-C as a terminal gives it, whatever the worker ignores
    log = work/'stopped'/'metrics.jsonl'
    for _ in range(600):
        if log.exists() and log.read_text().strip(): break
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, out + err
    assert 'Traceback' not in err and '--resume latest' in err, err
    done = len(log.read_text().splitlines())
    assert 1 <= done < 40
    r = ok(*base, '--num-epochs', str(done + 1), '--resume', 'latest', cwd=work)
    assert 'resumed from' in r.stdout, r.stdout
    assert [json.loads(l)['epoch'] for l in log.read_text().splitlines()] == list(range(1, done + 2))