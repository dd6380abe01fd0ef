"""Run a benchmark script against another commit of phoalign in the same run, for a ratio column measured side by side.

`previous_results(ref, script, args)` checks `ref` out into a temporary git worktree, runs `script` (this tree's copy, so
both sides measure the same thing) with that worktree first on PYTHONPATH and `--json-out FILE`, and returns what it wrote.
"""
import json, os, subprocess, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def previous_results(ref:str, script:str, args:list) -> dict:
    "The JSON results of `script args --json-out F` run on phoalign as it was at git `ref`."
    work = Path(tempfile.mkdtemp())
    tree, out = work/'tree', work/'out.json'
    subprocess.run(['git', '-C', str(ROOT), 'worktree', 'add', '--detach', '--quiet', str(tree), ref], check=True)
    try:
        env = dict(os.environ, PYTHONPATH=f'{tree}{os.pathsep}{os.environ.get("PYTHONPATH", "")}')
        subprocess.run([sys.executable, str(ROOT/'benchmarks'/script), *args, '--json-out', str(out)], check=True, env=env, cwd=tree)
        return json.loads(out.read_text())
    finally: subprocess.run(['git', '-C', str(ROOT), 'worktree', 'remove', '--force', str(tree)], check=False)
