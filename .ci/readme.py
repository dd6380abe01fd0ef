"""Write README.md from nbs/index.ipynb (Quarto, which `nbdev_readme` needs, is not available everywhere).
Markdown cells are copied; visible code cells become ```python blocks; `#| hide` cells are left out.
`--check` exits 1 when README.md differs from what the notebook gives."""
import json, sys
from pathlib import Path

root = Path(__file__).resolve().parents[1]

def render(nb_path=root/'nbs'/'index.ipynb') -> str:
    parts = []
    for cell in json.loads(nb_path.read_text(encoding='utf-8'))['cells']:
        src = ''.join(cell['source']).strip()
        if cell['cell_type'] == 'markdown': parts.append(src)
        elif cell['cell_type'] == 'code' and src and not any(l.strip().startswith('#|') and 'hide' in l for l in src.splitlines()):
            parts.append('```python\n' + src + '\n```')
    return '\n\n'.join(parts) + '\n'

if __name__ == '__main__':
    text, readme = render(), root/'README.md'
    if '--check' in sys.argv:
        if not readme.exists() or readme.read_text(encoding='utf-8') != text:
            sys.exit('README.md is out of step with nbs/index.ipynb: run `python .ci/readme.py` and commit the result')
        print('README.md matches nbs/index.ipynb')
    else:
        readme.write_text(text, encoding='utf-8'); print(f'wrote {readme}')
