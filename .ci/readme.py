"""Write README.md from nbs/index.ipynb (Quarto, which `nbdev_readme` needs, is not available everywhere).
Markdown cells are copied; visible code cells become ```python blocks; `#| hide` cells are left out. Images are
referenced from the notebook relative to nbs/ (`images/x.png`, what the docs site serves) and from the README relative
to the repository root (`nbs/images/x.png`, what GitHub shows).
`--check` exits 1 when README.md differs from what the notebook gives."""
import json, re, sys
from pathlib import Path

root = Path(__file__).resolve().parents[1]
nbs = root/'nbs'

_MD_IMAGE = re.compile(r'(!\[[^\]]*\]\()([^)\s]+)')        # ![alt](path
_HTML_IMAGE = re.compile(r'(<img\s[^>]*?src=["\'])([^"\']+)')   # <img src="path

def root_path(src:str) -> str:
    "A link relative to nbs/ made relative to the repository root; URLs and absolute paths unchanged."
    if re.match(r'^[a-z][a-z0-9+.-]*:|^/|^#', src, re.I): return src
    return (Path('nbs')/src).as_posix()

def root_images(md:str) -> str:
    "Markdown with its image paths (Markdown and HTML) rewritten from nbs/ to the repository root."
    fix = lambda m: m.group(1) + root_path(m.group(2))
    return _HTML_IMAGE.sub(fix, _MD_IMAGE.sub(fix, md))

def render(nb_path=nbs/'index.ipynb') -> str:
    parts = []
    for cell in json.loads(nb_path.read_text(encoding='utf-8'))['cells']:
        src = ''.join(cell['source']).strip()
        if cell['cell_type'] == 'markdown': parts.append(root_images(src))
        elif cell['cell_type'] == 'code' and src and not any(l.strip().startswith('#|') and 'hide' in l for l in src.splitlines()):
            parts.append('```python\n' + src + '\n```')
    return '\n\n'.join(parts) + '\n'

def missing_images(text:str) -> list[str]:
    "Image paths of the README that name no file in the repository."
    paths = [m.group(2) for m in _MD_IMAGE.finditer(text)] + [m.group(2) for m in _HTML_IMAGE.finditer(text)]
    return [p for p in paths if not re.match(r'^[a-z][a-z0-9+.-]*:', p, re.I) and not (root/p.split('#')[0]).is_file()]

if __name__ == '__main__':
    text, readme = render(), root/'README.md'
    if (bad := missing_images(text)): sys.exit(f'README.md would show missing images: {", ".join(bad)}')
    if '--check' in sys.argv:
        if not readme.exists() or readme.read_text(encoding='utf-8') != text:
            sys.exit('README.md is out of step with nbs/index.ipynb: run `python .ci/readme.py` and commit the result')
        print('README.md matches nbs/index.ipynb')
    else:
        readme.write_text(text, encoding='utf-8'); print(f'wrote {readme}')
