"""Zero-shot in Vietnamese as a user runs it: `phoalign tag` with the shipped CIFAR-100 label sets, `phoalign cifar zeroshot`
(a zero-shot CIFAR-100 top-1) on the synthetic CIFAR files `phoalign data synth --cifar` writes, Vietnamese labels typed with decomposed accents; then the
refusals."""
import json, unicodedata
from pathlib import Path
import pytest
from test_cli_data import phoalign, gallery
from test_cli_search import assert_refused

@pytest.fixture(scope='module')
def work(tmp_path_factory):
    "A fresh folder: data/ (a synthetic CIFAR-100 with 100 test images), model.pt (a tiny model knowing the CIFAR names in both languages), photos/."
    import shutil
    from phoalign.cifar import write_synthetic_cifar100
    from phoalign.model import create_model, save_model
    from phoalign.zeroshot import label_set, templates
    root = tmp_path_factory.mktemp('zeroshot-vi')
    write_synthetic_cifar100(root/'data', n_train=100, n_test=100)   # what `phoalign data synth --cifar` writes (its own tests run it), less its toy text model
    caps = [t.format(c) for lang in ('vi', 'en') for c in label_set(f'cifar100-{lang}') for t in templates(lang)]
    save_model(create_model('tiny', captions=caps), root/'model.pt')
    shutil.copytree(gallery/'photos', root/'photos')
    return root

def score(work, *args):
    r = phoalign('cifar', 'zeroshot', 'data', '--checkpoint', 'model.pt', '--device', 'cpu', '--json', *args, cwd=work)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)

@pytest.mark.slow
def test_cifar100_zero_shot_in_vietnamese(work):
    vi = score(work)                                                   # Vietnamese by default
    assert (vi['images'], vi['classes'], vi['split'], vi['language'], vi['templates']) == (100, 100, 'test', 'vi', 'vi')
    assert 0 <= vi['top1'] <= vi['top5'] <= 100
    # the figure of the library function on the same files and model
    from phoalign.cifar import zero_shot_cifar100
    from phoalign.model import load_model
    model = load_model(work/'model.pt')
    direct = zero_shot_cifar100(model, work/'data', 'vi', device='cpu')
    assert abs(direct['top1'] - vi['top1']) < 1e-9 and abs(direct['top5'] - vi['top5']) < 1e-9
    # English names and templates: another classifier, scored the same way
    en = score(work, '--language', 'en')
    assert en['language'] == 'en' and en['templates'] == 'en'
    assert abs(zero_shot_cifar100(model, work/'data', 'en', device='cpu')['top5'] - en['top5']) < 1e-9
    # templates of your own replace the language's templates only
    (work/'mine.txt').write_text('ảnh chụp {}.\n', encoding='utf-8')
    mine = score(work, '--templates', 'mine.txt')
    assert mine['templates'] == 'custom' and mine['language'] == 'vi'
    assert abs(zero_shot_cifar100(model, work/'data', 'vi', ['ảnh chụp {}.'], device='cpu')['top1'] - mine['top1']) < 1e-9
    r = phoalign('cifar', 'zeroshot', 'data', '--checkpoint', 'model.pt', '--device', 'cpu', cwd=work)
    assert r.returncode == 0 and 'zero-shot CIFAR-100 test (100 images, vi names, vi templates): top-1 ' in r.stdout, r.stdout + r.stderr

def test_tag_photos_with_a_label_set_and_nfd_labels(work):
    r = phoalign('tag', 'photos', '--checkpoint', 'model.pt', '--labels', 'cifar100-vi', '-k', '2', '--device', 'cpu', '--json', cwd=work)
    assert r.returncode == 0, r.stderr
    from phoalign.zeroshot import label_set
    tags = json.loads(r.stdout)
    assert len(tags) == 29 and all(len(t['tags']) == 2 and set(t['tags']) <= set(label_set('cifar100-vi')) for t in tags)
    # the same labels typed with decomposed accents (a Mac's), in a file: the same tags, composed
    (work/'nfd.txt').write_text(unicodedata.normalize('NFD', '\n'.join(label_set('cifar100-vi'))), encoding='utf-8')
    again = phoalign('tag', 'photos', '--checkpoint', 'model.pt', '--labels', 'nfd.txt', '-k', '2', '--device', 'cpu', '--json', cwd=work)
    assert again.returncode == 0 and json.loads(again.stdout) == tags, again.stderr
    # the language of the templates at two settings: other scores
    en = phoalign('tag', 'photos', '--checkpoint', 'model.pt', '--labels', 'cifar100-vi', '-k', '2', '--templates', 'en', '--device', 'cpu', '--json', cwd=work)
    assert en.returncode == 0 and [t['scores'] for t in json.loads(en.stdout)] != [t['scores'] for t in tags]

def test_refusals(work):
    (work/'labels.txt').write_text('mèo\nchó\n', encoding='utf-8')
    assert_refused([(['--templates', 'fr'], 'fr'), (['--language', 'fr'], "invalid choice: 'fr'"), (['--samples', '0'], 'samples')],
                   work, 'cifar', 'zeroshot', 'data', '--checkpoint', 'model.pt')
    assert_refused([(['--labels', 'cifar10-vi'], 'cifar10-vi: no such label file')], work, 'tag', 'photos', '--checkpoint', 'model.pt')
