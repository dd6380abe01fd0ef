"""How long `phoalign --help` takes beside `python -c "import phoalign"` (and torch), measured side by side in one run.

    python benchmarks/cli_startup.py [--runs 5] [--before /path/to/an/older/checkout]

Each command runs `--runs` times in a fresh interpreter; the table gives the median and the fastest wall time, and
whether torch / transformers were imported (checked in the same process through `sys.modules`). With `--before`, each
command also runs against that checkout (put first on PYTHONPATH), alternating with this one, for a side-by-side ratio.
"""
import argparse, os, statistics, subprocess, sys, time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

CHECK = "import sys; {code}; print('MODULES', 'torch' in sys.modules, 'transformers' in sys.modules)"
CASES = [
    ('python -c "import phoalign"', 'import phoalign'),
    ('phoalign --help', "sys.argv = ['phoalign', '--help']\ntry:\n from phoalign.cli import main; main(['--help'])\nexcept SystemExit: pass"),
    ('phoalign train --help', "sys.argv = ['phoalign', 'train', '--help']\ntry:\n from phoalign.cli import main; main(['train', '--help'])\nexcept SystemExit: pass"),
    ('phoalign cir finetune --help', "try:\n from phoalign.cli import main; main(['cir', 'finetune', '--help'])\nexcept SystemExit: pass"),
    ('python -c "import torch"', 'import torch'),
    ('python -c "import phoalign.model"', 'import phoalign.model'),
]

def run(code:str, root:Path) -> tuple[float, str]:
    env = {**os.environ, 'PYTHONPATH': str(root)}
    t = time.perf_counter()
    out = subprocess.run([sys.executable, '-c', CHECK.format(code=code) if 'main(' not in code else
                          f"import sys, atexit\natexit.register(lambda: print('MODULES', 'torch' in sys.modules, 'transformers' in sys.modules))\n{code}"],
                         capture_output=True, text=True, env=env, cwd=root)
    dt = time.perf_counter() - t
    if out.returncode: raise SystemExit(f'{code!r} failed:\n{out.stderr}')
    line = next((l for l in out.stdout.splitlines() if l.startswith('MODULES')), 'MODULES ? ?')
    return dt, line

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--runs', type=int, default=5, help='runs of each command (fresh interpreters)')
    ap.add_argument('--before', help='an older checkout of phoalign to time beside this one')
    args = ap.parse_args()
    roots = [('this checkout', HERE)] + ([('before', Path(args.before).resolve())] if args.before else [])
    print('| command | checkout | median s | fastest s | torch imported | transformers imported |\n|---|---|---|---|---|---|')
    for name, code in CASES:
        times, lines = {r: [] for r, _ in roots}, {}
        for _ in range(args.runs):
            for label, root in roots:   # alternating, so both see the same machine load
                dt, lines[label] = run(code, root); times[label].append(dt)
        for label, _ in roots:
            _, torch_in, tf_in = lines[label].split()
            print(f'| {name} | {label} | {statistics.median(times[label]):.2f} | {min(times[label]):.2f} | {torch_in} | {tf_in} |')

if __name__ == '__main__': main()
