#!/usr/bin/env python
"""The package drawn as layers: modules in notebook order, imports as arrows.

Prints lines per module, the largest code cells, the imports that climb back up (a module importing one from a later
notebook), import cycles, private names used outside their module, names exported by two modules with two meanings,
and exported cells without a demo or test after them. Exits 1 when a back edge, a cycle, a cross-module private import,
a doubly exported name, an exported cell longer than --max-cell lines or one with no demo/test after it is found, so CI
fails when one comes back.

    python .ci/layers.py            # the report; exit status for CI
    python .ci/layers.py --json F   # also the figures as JSON (for before/after tables)
"""
import argparse, ast, json, re, sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = 'phoalign'
EXPORT = re.compile(r'^#\|\s*(export|exporti|exports)\b', re.M)


def notebooks():
    "Library notebooks in file-name order, with the module each one exports to."
    out = []
    for nb_path in sorted((ROOT/'nbs').glob('*.ipynb')):
        cells = json.loads(nb_path.read_text(encoding='utf-8'))['cells']
        module = None
        for cell in cells:
            m = re.search(r'^#\|\s*default_exp\s+(\S+)', ''.join(cell['source']), re.M)
            if cell['cell_type'] == 'code' and m: module = f'{PKG}.{m.group(1)}'; break
        out.append((nb_path, module, cells))
    return out


def module_files():
    "Every module of the package: dotted name -> file (packages as their __init__)."
    files = {}
    for path in sorted((ROOT/PKG).rglob('*.py')):
        if path.name == '_modidx.py': continue
        parts = path.relative_to(ROOT).with_suffix('').parts
        if parts[-1] == '__init__': parts = parts[:-1]
        files['.'.join(parts)] = path
    return files


def resolve(module, node, files):
    "The package modules an import statement in `module` points at, with the names it takes."
    package = module if files[module].name == '__init__.py' else module.rpartition('.')[0]
    if isinstance(node, ast.Import):
        return [(a.name, []) for a in node.names if a.name.startswith(PKG + '.') and a.name in files]
    if node.level:
        base = package.split('.')
        base = base[:len(base) - node.level + 1]
        target = '.'.join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ''
    if not (target == PKG or target.startswith(PKG + '.')): return []
    names = [a.name for a in node.names]
    out = []
    if target in files and target != PKG:
        sub = [n for n in names if f'{target}.{n}' in files]   # `from phoalign.cir import data` imports a module
        out.append((target, [n for n in names if n not in sub]))
        out += [(f'{target}.{n}', []) for n in sub]
    else:
        out += [(f'{target}.{n}', []) for n in names if f'{target}.{n}' in files]
    return out


def defined_names(tree):
    "Names a module defines at its top level (functions, classes, assignments)."
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)): names.add(node.name)
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name): names.add(n.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name): names.add(node.target.id)
    return names


def exported(tree):
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == '__all__' for t in node.targets):
            try: return list(ast.literal_eval(node.value))
            except ValueError: return []
    return []


def imports_only(src:str) -> bool:
    "A cell of nothing but imports (and `__all__`): neither code to test nor a demo."
    try: tree = ast.parse('\n'.join(l for l in src.splitlines() if not l.lstrip().startswith(('%', '!'))))
    except SyntaxError: return False
    return all(isinstance(n, (ast.Import, ast.ImportFrom)) or (isinstance(n, ast.Assign) and
               any(isinstance(t, ast.Name) and t.id == '__all__' for t in n.targets)) for n in tree.body)


def cycles(graph):
    "Strongly connected components with more than one module (Tarjan)."
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    def visit(v):
        index[v] = low[v] = counter[0]; counter[0] += 1; stack.append(v); on.add(v)
        for w in graph.get(v, ()):
            if w not in index: visit(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: out.append(sorted(comp))
    for v in list(graph): 
        if v not in index: visit(v)
    return out


def measure(max_cell):
    files = module_files()
    nbs = notebooks()
    order = {}   # a module sits at the first notebook that exports a cell to it (`#| export other.module` included)
    for i, (_, default, nb_cells) in enumerate(nbs):
        for cell in nb_cells:
            m = re.match(r'#\|\s*export[is]?[ \t]+([\w.]+)', ''.join(cell['source'])) if cell['cell_type'] == 'code' else None
            dest = f'{PKG}.{m.group(1)}' if m else (default if EXPORT.search(''.join(cell['source'])) else None)
            if dest and dest not in order: order[dest] = i
    # A package's __init__ sits with its first module; the package itself imports nothing later than that.
    for m in files:
        if m not in order:
            subs = [order[s] for s in order if s.startswith(m + '.')]
            order[m] = min(subs) if subs else -1
    lines = {m: len(p.read_text(encoding='utf-8').splitlines()) for m, p in files.items()}
    graph, private, back, kept = defaultdict(set), [], [], []
    trees = {m: ast.parse(p.read_text(encoding='utf-8')) for m, p in files.items()}
    for m, tree in trees.items():
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)): continue
            for target, names in resolve(m, node, files):
                if target == m: continue
                graph[m].add(target)
                inside = m.startswith(target + '.') or target.startswith(m + '.')   # a package and its own modules
                if order.get(target, -1) > order.get(m, -1) and not inside:
                    back.append((m, target, node.lineno))
                private += [(m, target, n, node.lineno) for n in names if n.startswith('_') and not n.startswith('__')]
        for node in ast.walk(tree):   # a moved name's new home (keep_moved_names) is an arrow too: it imports it on demand
            if isinstance(node, ast.Call) and getattr(node.func, 'id', getattr(node.func, 'attr', None)) == 'keep_moved_names':
                for arg in node.args[1:2]:
                    values = [v for v in ast.walk(arg) if isinstance(v, ast.Constant) and isinstance(v.value, str) and v.value.startswith(PKG + '.')]
                    for v in values:
                        target = v.value.partition(':')[0]
                        if target not in files or target == m: continue
                        # a deprecation pointer is no dependency (the module does not use the name): listed, not counted,
                        # unless it reaches the test helpers, which no library module may lead to
                        if target == f'{PKG}.testing': back.append((m, target, node.lineno))
                        else: kept.append((m, v.value, node.lineno))
        for node in ast.walk(tree):   # phoalign.x._name reached through an attribute
            if isinstance(node, ast.Attribute) and node.attr.startswith('_') and not node.attr.startswith('__'):
                chain, v = [node.attr], node.value
                while isinstance(v, ast.Attribute): chain.append(v.attr); v = v.value
                if isinstance(v, ast.Name) and v.id == PKG:
                    target = '.'.join([PKG] + chain[:0:-1])
                    if target in files and target != m: private.append((m, target, node.attr, node.lineno))
    # the same name exported by two modules that each define it: two meanings under one name
    owners = defaultdict(list)
    for m, tree in trees.items():
        defined = defined_names(tree)
        for name in exported(tree):
            if name in defined: owners[name].append(m)
    twice = {n: ms for n, ms in owners.items() if len(ms) > 1}
    private_defs = defaultdict(list)   # one helper written twice (the same private name defined in two modules)
    for m, tree in trees.items():
        for name in defined_names(tree):
            if name.startswith('_') and not name.startswith('__') and name != '_all_': private_defs[name].append(m)   # _all_: nbdev's re-export list
    repeated = {n: ms for n, ms in private_defs.items() if len(ms) > 1}
    cells, untested = [], []
    for nb_path, module, nb_cells in nbs:
        code = [c for c in nb_cells if c['cell_type'] == 'code']
        for i, cell in enumerate(code):
            src = ''.join(cell['source'])
            n = len(src.splitlines())
            is_export = bool(EXPORT.search(src))
            cells.append((n, nb_path.name, i, is_export))
            if is_export and not imports_only(src):
                # the next code cell is its demo or test (an imports-only cell is neither)
                nxt = code[i+1] if i + 1 < len(code) else None
                if nxt is None or EXPORT.search(''.join(nxt['source'])) or imports_only(''.join(nxt['source'])):
                    untested.append((nb_path.name, i))
    cells.sort(reverse=True)
    return dict(lines=lines, back_edges=back, cycles=cycles(graph), private=private, twice=twice, cells=cells,
                untested=untested, repeated=repeated, kept=kept, max_cell=max_cell, graph={k: sorted(v) for k, v in graph.items()})


def report(r):
    print('## lines per module')
    for m, n in sorted(r['lines'].items(), key=lambda kv: -kv[1]): print(f'{n:6d}  {m}')
    print(f"{sum(r['lines'].values()):6d}  total in {len(r['lines'])} modules")
    print('\n## largest code cells (lines, notebook, code cell #, exported)')
    for n, nb, i, e in r['cells'][:10]: print(f'{n:6d}  {nb} #{i}{"  exported" if e else ""}')
    big = [c for c in r['cells'] if c[3] and c[0] > r['max_cell']]
    print(f"exported cells over {r['max_cell']} lines: {len(big)}")
    print('\n## back edges (a module importing one from a later notebook)')
    for m, t, ln in r['back_edges']: print(f'  {m}:{ln} -> {t}')
    print(f"{len(r['back_edges'])} back edges")
    print('\n## names kept at their old home for one release (keep_moved_names: a DeprecationWarning, then the new home)')
    for m, where, ln in r['kept']: print(f'  {m}:{ln} -> {where}')
    print('\n## cycles')
    for c in r['cycles']: print('  ' + ' <-> '.join(c))
    print(f"{len(r['cycles'])} cycles")
    print('\n## private names imported across modules')
    for m, t, n, ln in sorted(set(r['private'])): print(f'  {m}:{ln} uses {t}.{n}')
    print(f"{len(set((t, n, m) for m, t, n, _ in r['private']))} cross-module private imports "
          f"({len(set((t, n) for m, t, n, _ in r['private']))} distinct names)")
    print('\n## names exported by two modules')
    for n, ms in sorted(r['twice'].items()): print(f'  {n}: {", ".join(ms)}')
    print(f"{len(r['twice'])} names exported twice")
    print('\n## private helpers defined in more than one module (one piece of code should serve every caller)')
    for n, ms in sorted(r['repeated'].items()): print(f'  {n}: {", ".join(ms)}')
    print(f"{len(r['repeated'])} helpers defined twice or more")
    by_nb = defaultdict(int)
    for nb, i in r['untested']: by_nb[nb] += 1
    print(f"\n## exported cells whose next cell is not a demo or test: {len(r['untested'])}")
    for nb, n in sorted(by_nb.items()): print(f'  {n:3d}  {nb}')


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--json', help='also write the figures to this JSON file')
    ap.add_argument('--max-cell', type=int, default=60, help='longest exported cell allowed (lines); 0: no limit')
    ap.add_argument('--notebook', help='list this notebook\'s exported cells that are too long or have no demo/test after them')
    ap.add_argument('--report-only', action='store_true', help='exit 0 whatever is found (for a before picture)')
    args = ap.parse_args()
    r = measure(args.max_cell or 10**9)
    if args.notebook:
        code = [c for c in json.loads((ROOT/'nbs'/args.notebook).read_text())['cells'] if c['cell_type'] == 'code']
        def first(i): return next((l for l in code[i]['source'] if l.strip() and not l.startswith('#|')), '').strip()[:90]
        for n, nb, i, e in r['cells']:
            if nb == args.notebook and e and n > r['max_cell']: print(f'too long ({n} lines): cell {code[i].get("id")}  {first(i)}')
        for nb, i in r['untested']:
            if nb == args.notebook: print(f'no demo/test after: cell {code[i].get("id")}  {first(i)}')
        return 0
    report(r)
    if args.json: Path(args.json).write_text(json.dumps(r, indent=1, default=list))
    big = [c for c in r['cells'] if c[3] and c[0] > r['max_cell']]
    counts = dict(back_edges=len(r['back_edges']), cycles=len(r['cycles']), private_imports=len(r['private']),
                  names_exported_twice=len(r['twice']), long_cells=len(big), cells_without_demo=len(r['untested']))
    print('\nlayers: ' + ', '.join(f'{v} {k.replace("_", " ")}' for k, v in counts.items()) + f" ({len(r['lines'])} modules)")
    if sum(counts.values()) and not args.report_only:
        print('layers: each of these must be 0 (see above)')
        return 1
    return 0


if __name__ == '__main__': sys.exit(main())
