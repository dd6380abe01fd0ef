"""The documentation site, checked offline: what `nbdev_docs` does up to Quarto, then a real browser on the pages.

Quarto is not available everywhere, so this check renders the site itself and checks what a reader would notice:

1. preprocess   what `nbdev_docs` runs before Quarto (nbdev 2.4.14's `_pre_docs`): nbs/nbdev.yml from settings.ini, the
                symbol index, the sidebar (ours is hand-written: `custom_sidebar = True`), then every notebook through
                nbdev's processors into _proc/ (show_doc cells added and executed, hidden cells dropped, backticked
                names linked). A notebook that fails there fails `nbdev_docs` too.
2. render       every processed notebook to HTML with nbconvert, under the page names Quarto gives (the `output-file`
                nbdev writes: `09_search.ipynb` -> `search.html`), with the sidebar of nbs/sidebar.yml, the navbar of
                nbs/_quarto.yml, Pandoc's heading ids, and the images the pages use; no remote CSS or JavaScript.
3. links        every link into the site (https://phoalign.github.io/phoalign/..., what nbdev makes of `name`) and every
                relative link (`foo.ipynb`, `foo.html#anchor`, images) must reach a rendered page and an element with
                that id; links elsewhere are counted, not followed.
4. show_doc     every function and class in a module's `__all__` has its show_doc on its page: a heading, the signature,
                and a docments comment for each parameter (`**kwargs` and parameters of inherited constructors aside).
5. browser      the home page, an API page and a tutorial page opened in headless Chromium (nbs/browser.py): no console
                error, no failed request (remote requests are blocked), no image that did not load; a screenshot of each.

Prints a short report and the folder holding the pages and screenshots; exits 1 naming each page and what is broken.
`PHOALIGN_REQUIRE_BROWSER=1` (set by CI) makes a missing Chromium a failure instead of a skipped step."""
from __future__ import annotations
import argparse, html, json, os, re, shutil, sys, tempfile, time, warnings
from pathlib import Path
from urllib.parse import urlsplit, unquote

ROOT = Path(__file__).resolve().parents[1]
BROWSE = ('index.html', 'search.html', 'tutorials/search.html')   # the home page, an API page, a tutorial page
MD_EXTS = ('.ipynb', '.qmd', '.md')

# ---------------------------------------------------------------------------------------------------------------------
# 1. preprocess: nbdev_docs up to Quarto

def _process_one(job):
    "Run nbdev's processors on one file (in a worker process); returns (source, error or None, warnings)."
    import nbdev.serve_drv
    src = job[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        try: nbdev.serve_drv.main(job); err = None
        except BaseException as e:   # SystemExit too: a notebook calling sys.exit would end the build
            lines = str(e).splitlines()
            err = '\n      '.join(lines[:5] + ([f'... ({len(lines) - 5} more lines of the cell)'] if len(lines) > 5 else []))
            cause = e.__cause__ or e.__context__
            if cause is not None: err += f'\n    caused by {type(cause).__name__}: {cause}'
    notes = [str(w.message).split('\n---\n')[1].split('\n')[0] if '\n---\n' in str(w.message) else str(w.message)
             for w in caught if 'imports and other code' in str(w.message)]
    return str(src), err, notes

def preprocess(force:bool=True, workers:int|None=None) -> tuple[Path, list[str], list[str]]:
    "What `nbdev_docs` does before Quarto; returns the `_proc` folder, the errors and the warnings."
    os.chdir(ROOT)
    from nbdev.config import get_config
    from nbdev.quarto import refresh_quarto_yml, nbdev_sidebar
    from nbdev.serve import _proc_file
    from nbdev.doclinks import nbglob, _build_modidx
    from fastcore.utils import defaults
    cfg = get_config()
    nbs, cache = cfg.nbs_path, cfg.config_path/'_proc'
    refresh_quarto_yml()                                # nbs/nbdev.yml (and _quarto.yml, when there is none)
    _build_modidx()                                     # phoalign/_modidx.py, as nbdev_export writes it
    nbdev_sidebar.__wrapped__(path=nbs)                 # a no-op with custom_sidebar = True: sidebar.yml is ours
    chk_mtime = max(cfg.config_file.stat().st_mtime, Path(sys.modules['nbdev.serve'].__file__).stat().st_mtime)
    if force or (cache.exists() and cache.stat().st_mtime < chk_mtime): shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    files = nbglob(nbs, func=Path, file_glob='', file_re='')
    for extra in ('_quarto.yml', '_brand.yml'):
        if (nbs/extra).exists(): files.append(nbs/extra)
    jobs = [j for j in files.map(_proc_file, mtime=cache.stat().st_mtime, cache=cache, path=nbs) if j]
    errors, notes = [], []
    if jobs:
        import concurrent.futures as cf, multiprocessing as mp
        import docs as this   # the worker by an importable name: IPython replaces __main__ in the workers
        n = workers or defaults.cpus
        with cf.ProcessPoolExecutor(min(n, len(jobs)), mp_context=mp.get_context('spawn')) as ex:
            for src, err, warns in ex.map(this._process_one, jobs):
                rel = Path(src).relative_to(nbs)
                if err: errors.append(f'{rel}: nbdev could not process it (nbdev_docs fails the same way): {err}')
                notes += [f'{rel}: a cell mixes imports with other code, so nbdev runs it to build the docs: {w}' for w in warns]
    if not errors: cache.touch()
    return cache, errors, notes

# ---------------------------------------------------------------------------------------------------------------------
# 2. render: processed notebooks -> HTML pages

def nbpath2html(rel:Path) -> Path:
    "nbdev's page name for a notebook: a leading numeric prefix dropped, lower case, .html (`09_search.ipynb` -> `search.html`)."
    from nbdev.doclinks import _nbpath2html
    return _nbpath2html(Path(rel))

def frontmatter(nb:dict) -> dict:
    "The YAML front matter nbdev writes into a processed notebook's first (raw) cell."
    import yaml
    cells = nb.get('cells', [])
    if cells and cells[0]['cell_type'] == 'raw':
        src = ''.join(cells[0]['source']).strip()
        if src.startswith('---'): return yaml.safe_load(src.strip('-').strip()) or {}
    return {}

def page_of(rel:Path, fm:dict) -> str:
    "The page a notebook becomes: its front matter's `output-file` beside it, else nbdev's name."
    out = fm.get('output-file')
    return (rel.parent/out).as_posix() if out else nbpath2html(rel).as_posix()

def pandoc_id(text:str) -> str:
    "The identifier Pandoc (hence Quarto) gives a heading: letters, digits, `_-.` kept, spaces to `-`, lower case."
    t = ''.join(c for c in text if c.isalnum() or c in '_-. \t\n')
    t = re.sub(r'\s+', '-', t.strip()).lower()
    while t and not t[0].isalpha(): t = t[1:]
    return t or 'section'

_DIRECTIVE = re.compile(r'^\s*#\|\s*([\w-]+)\s*:?\s*(.*?)\s*$')

def quarto_options(cell:dict) -> dict:
    "The `#| key: value` options at the top of a code cell."
    opts = {}
    for line in ''.join(cell.get('source', '')).splitlines():
        m = _DIRECTIVE.match(line)
        if not m: break
        opts[m.group(1)] = m.group(2)
    return opts

_ATTR_LINK = re.compile(r'\[([^\]]+)\]\(([^)\s]+)\)\{([^}]*)\}')

def pandoc_links(md:str) -> str:
    "`[text](url){target=\"_blank\" style=...}` (Pandoc's link attributes, used by show_doc) as an HTML link."
    def sub(m):
        attrs = ' '.join(a for a in re.findall(r'[\w-]+="[^"]*"', m.group(3)))
        return f'<a href="{html.escape(m.group(2))}" {attrs}>{html.escape(m.group(1))}</a>'
    return _ATTR_LINK.sub(sub, md)

def quarto_cells(nb:dict) -> dict:
    "Apply what Quarto does with nbdev's cell options: `echo`, `output`, `include`, directives hidden, front matter dropped."
    cells = []
    for i, c in enumerate(nb['cells']):
        if 'source' not in c or (i == 0 and c['cell_type'] == 'raw'): continue
        if c['cell_type'] == 'markdown': c['source'] = pandoc_links(''.join(c['source']))
        if c['cell_type'] == 'code':
            o = quarto_options(c)
            if o.get('include') == 'false': continue
            src = ''.join(c['source']).splitlines()
            while src and _DIRECTIVE.match(src[0]): src.pop(0)
            c['source'] = '\n'.join(src)
            if o.get('echo') == 'false': c['source'] = ''; c.setdefault('metadata', {})['phoalign_no_input'] = True
            if o.get('output') == 'false': c['outputs'] = []
            for out in c.get('outputs', []):
                md = out.get('data', {}).get('text/markdown')
                if md is not None: out['data']['text/markdown'] = pandoc_links(''.join(md))
        cells.append(c)
    nb['cells'] = cells
    return nb

def load_sidebar(nbs:Path) -> list:
    "nbs/sidebar.yml's entries: notebook paths and `{section, contents}`."
    import yaml
    return yaml.safe_load((nbs/'sidebar.yml').read_text(encoding='utf-8'))['website']['sidebar']['contents']

def load_navbar(nbs:Path) -> dict:
    "The navbar of nbs/_quarto.yml."
    import yaml
    return yaml.safe_load((nbs/'_quarto.yml').read_text(encoding='utf-8'))['website'].get('navbar', {})

def _rel(frm:str, to:str) -> str:
    "A relative URL from page `frm` to site path `to` (both relative to the site root)."
    return os.path.relpath(to, os.path.dirname(frm) or '.').replace(os.sep, '/')

def nav_html(page:str, sidebar:list, navbar:dict, pages:dict, by_source:dict, title:str) -> tuple[str, str]:
    "The navbar and the sidebar of `page`, as HTML (links relative to the page)."
    def link(src, cls=''):
        target = by_source.get(src)
        if target is None: return f'<span class="missing">{html.escape(src)}</span>'
        here = ' active' if target == page else ''
        return f'<a class="{cls}{here}" href="{_rel(page, target)}">{html.escape(pages[target]["title"])}</a>'
    def items(entries):
        out = []
        for e in entries:
            if isinstance(e, dict): out.append(f'<li class="section"><span>{html.escape(e["section"])}</span><ul>{items(e.get("contents", []))}</ul></li>')
            else: out.append(f'<li>{link(e)}</li>')
        return ''.join(out)
    menus = []
    for side in ('left', 'right'):
        for e in navbar.get(side, []):
            if 'menu' in e: menus.append(f'<details class="menu"><summary>{html.escape(e["text"])}</summary>' + ''.join(link(m, 'menu-item') for m in e['menu']) + '</details>')
            elif 'href' in e: menus.append(f'<a class="nav-link" href="{html.escape(e["href"])}" aria-label="{html.escape(e.get("aria-label", e.get("text", "")))}">{html.escape(e.get("text") or e.get("aria-label") or e.get("icon", "link"))}</a>')
    top = f'<header class="navbar"><a class="brand" href="{_rel(page, "index.html")}">{html.escape(title)}</a>{"".join(menus)}</header>'
    return top, f'<nav class="sidebar"><ul>{items(sidebar)}</ul></nav>'

SITE_CSS = """
body { margin: 0; font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #212529; line-height: 1.5; }
.navbar { background: #2780e3; color: #fff; padding: .6rem 1.5rem; display: flex; gap: 1.5rem; align-items: center; position: sticky; top: 0; z-index: 2; }
.navbar a, .navbar summary { color: #fff; text-decoration: none; cursor: pointer; }
.navbar .brand { font-size: 1.25rem; font-weight: 600; }
.navbar .menu { position: relative; } .navbar .menu[open] { background: #1a6bc4; }
.navbar .menu a { display: block; background: #fff; color: #2780e3; padding: .25rem .8rem; white-space: nowrap; }
.navbar .menu[open] > a:first-of-type { margin-top: .3rem; }
.navbar .nav-link:last-child { margin-left: auto; }
.layout { display: grid; grid-template-columns: 16rem minmax(0, 1fr) 14rem; gap: 2rem; max-width: 1400px; margin: 0 auto; padding: 0 1rem; }
.sidebar, .toc { position: sticky; top: 3rem; align-self: start; max-height: calc(100vh - 3rem); overflow-y: auto; }
.sidebar { font-size: .9rem; padding-top: 1.5rem; } .sidebar ul { list-style: none; padding-left: .8rem; margin: 0; }
.sidebar > ul { padding-left: 0; } .sidebar li { margin: .15rem 0; } .sidebar .section > span { font-weight: 600; display: block; margin-top: .6rem; }
.sidebar a { color: #495057; text-decoration: none; } .sidebar a.active { color: #2780e3; font-weight: 600; }
.toc { font-size: .85rem; padding-top: 1.5rem; } .toc ul { list-style: none; padding-left: .8rem; border-left: 1px solid #dee2e6; }
.toc a { color: #6c757d; text-decoration: none; }
main { min-width: 0; padding-bottom: 4rem; }
h1.title { margin-top: 1.5rem; margin-bottom: .3rem; }
.anchor-link { display: none; }
pre { background: #f8f9fa; padding: .6rem .8rem; border-radius: 4px; overflow-x: auto; font-size: .85rem; }
.code_cell .input_area pre { border-left: 3px solid #adb5bd; }
.output_area pre { background: none; border-left: 2px solid lightsalmon; margin-left: .8rem; }
.output_markdown pre, .rendered_html pre { background: #f8f9fa; border-left: none; }
table { border-collapse: collapse; margin: .8rem 0; } th, td { border-bottom: 1px solid #dee2e6; padding: .3rem .6rem; text-align: left; }
img { max-width: 100%; height: auto; }
hr { border: 0; border-top: 1px solid #dee2e6; margin: 2rem 0 1rem; }
.missing { color: #c00; }
"""

def page_html(title:str, description:str, body:str, top:str, side:str, page:str) -> str:
    "A whole page: navbar, sidebar, title and description, the notebook, and a table of contents filled in later."
    up = _rel(page, 'x')[:-1]
    desc = re.sub(r'`([^`]+)`', r'<code>\1</code>', html.escape(description))   # Quarto renders the description's Markdown
    desc = f'<div class="description">{desc}</div>' if description else ''
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{html.escape(title)}</title><link rel="icon" href="data:,">'
            f'<link rel="stylesheet" href="{up}site.css"><link rel="stylesheet" href="{up}pygments.css"><link rel="stylesheet" href="{up}styles.css"></head>'
            f'<body>{top}<div class="layout">{side}<main id="quarto-document-content"><header id="title-block-header">'
            f'<h1 class="title">{html.escape(title)}</h1>{desc}</header>{body}</main><nav class="toc" id="TOC"></nav></div></body></html>')

def render(cache:Path, out:Path, nbs:Path) -> tuple[dict, list[str]]:
    "Render every processed notebook of `cache` into `out`; returns {page: info} and the errors."
    import nbformat
    from nbconvert import HTMLExporter
    from bs4 import BeautifulSoup
    from pygments.formatters import HtmlFormatter
    from nbdev.config import get_config
    errors, pages, by_source = [], {}, {}
    sources = sorted(p.relative_to(nbs) for p in nbs.rglob('*.ipynb')
                     if not any(part.startswith(('.', '_')) for part in p.relative_to(nbs).parts))
    for rel in sources:
        proc = cache/rel
        if not proc.exists():   # its processing failed (reported already): remember the page it would have been
            pages[nbpath2html(rel).as_posix()] = dict(source=rel.as_posix(), title=rel.stem, description='', failed=True)
            by_source[rel.as_posix()] = nbpath2html(rel).as_posix(); continue
        nb = json.loads(proc.read_text(encoding='utf-8'))
        fm = frontmatter(nb)
        page = page_of(rel, fm)
        if page in pages: errors.append(f'{rel}: writes {page}, which {pages[page]["source"]} writes too'); continue
        pages[page] = dict(source=rel.as_posix(), title=str(fm.get('title') or rel.stem), description=str(fm.get('description') or ''), nb=nb)
        by_source[rel.as_posix()] = page
    sidebar, navbar = load_sidebar(nbs), load_navbar(nbs)
    listed = set()
    def walk(entries):
        for e in entries:
            if isinstance(e, dict): walk(e.get('contents', []))
            else:
                listed.add(e)
                if not (nbs/e).exists(): errors.append(f'sidebar.yml: {e} does not exist')
    walk(sidebar)
    for src in by_source:
        if src not in listed: errors.append(f'sidebar.yml: {src} is not listed, so no page links to it')
    exporter = HTMLExporter(template_name='basic', exclude_input_prompt=True, exclude_output_prompt=True)
    title = get_config().title
    for page, info in pages.items():
        if info.get('failed'): continue
        node = nbformat.from_dict(quarto_cells(info.pop('nb')))
        try: body, _ = exporter.from_notebook_node(node)
        except Exception as e: errors.append(f'{page}: nbconvert could not render it: {type(e).__name__}: {e}'); continue
        top, side = nav_html(page, sidebar, navbar, pages, by_source, title)
        soup = BeautifulSoup(page_html(info['title'], info['description'], body, top, side, page), 'html.parser')
        for div in soup.select('div.input'):    # cells whose source Quarto hides (`echo: false`): no empty input box
            if not div.get_text(strip=True): div.decompose()
        seen = {}
        for h in soup.select('main h1, main h2, main h3, main h4, main h5, main h6'):
            if 'title' in (h.get('class') or []): h['id'] = 'title-block-header-title'; continue
            for a in h.select('a.anchor-link'): a.decompose()
            hid = pandoc_id(h.get_text())
            if hid in seen: seen[hid] += 1; hid = f'{hid}-{seen[hid]}'
            else: seen[hid] = 0
            h['id'] = hid
        toc = soup.select_one('#TOC')
        entries = [h for h in soup.select('main h2, main h3') if h.get('id')]
        if entries:
            toc.append(BeautifulSoup('<strong>On this page</strong><ul>' + ''.join(
                f'<li class="toc-{h.name}"><a href="#{h["id"]}">{html.escape(h.get_text())}</a></li>' for h in entries) + '</ul>', 'html.parser'))
        info['soup'] = soup
    (out/'site.css').write_text(SITE_CSS, encoding='utf-8')
    (out/'pygments.css').write_text(HtmlFormatter(style='default').get_style_defs('.highlight'), encoding='utf-8')
    shutil.copy2(nbs/'styles.css', out/'styles.css')
    return pages, errors

# ---------------------------------------------------------------------------------------------------------------------
# 3. links: every link into the site reaches a page and an element

def site_url() -> str:
    "The site's address: `doc_host` + `doc_baseurl` of settings.ini."
    from nbdev.config import get_config
    cfg = get_config()
    return cfg.doc_host.rstrip('/') + '/' + cfg.doc_baseurl.strip('/') + '/'

def resolve(page:str, url:str, by_source:dict, base:str) -> tuple[str, str]|None:
    "Site path and anchor that `url` on `page` points to; None for a link outside the site."
    if url.startswith(base): path, frag = urlsplit(url[len(base):]).path, urlsplit(url).fragment
    else:
        u = urlsplit(url)
        if u.scheme or u.netloc or url.startswith('//'): return None
        path, frag = u.path, u.fragment
        if not path: return page, unquote(frag)
        path = os.path.normpath(os.path.join(os.path.dirname(page), unquote(path))).replace(os.sep, '/')
    path = unquote(path) or 'index.html'
    if path.endswith('/'): path += 'index.html'
    if path.endswith(MD_EXTS): path = by_source.get(path, path + ' (no such notebook)')
    return path, unquote(frag)

def check_links(pages:dict, out:Path, cache:Path) -> tuple[list[str], dict]:
    "Rewrite internal links to the local pages and check them; copy local images; returns errors and counts."
    errors, n = [], dict(internal=0, external=0, images=0)
    into_failed = {}
    base = site_url()
    by_source = {info['source']: page for page, info in pages.items()}
    ids = {page: {e['id'] for e in info['soup'].select('[id]')} | {e['name'] for e in info['soup'].select('a[name]')}
           for page, info in pages.items() if 'soup' in info}
    for page, info in pages.items():
        soup = info.get('soup')
        if soup is None: continue
        for a in soup.select('a[href]'):
            href = a['href']
            if href.startswith(('mailto:', 'javascript:', 'data:')): continue
            target = resolve(page, href, by_source, base)
            if target is None: n['external'] += 1; continue
            path, frag = target
            n['internal'] += 1
            where = f'{page}: link {href!r} ({a.get_text(strip=True)[:40]!r})'
            if pages.get(path, {}).get('failed'):
                if a.find_parent('main') is not None: into_failed.setdefault(path, set()).add(page)
                continue
            if path in ids:
                if frag and frag not in ids[path]: errors.append(f'{where}: {path} has no element with id {frag!r}')
            elif (cache/path).is_file(): (out/path).parent.mkdir(parents=True, exist_ok=True); shutil.copy2(cache/path, out/path)
            else: errors.append(f'{where}: no page or file {path}'); continue
            a['href'] = _rel(page, path) + (f'#{frag}' if frag else '')
        for img in soup.select('img[src]'):
            src = img['src']
            if src.startswith('data:'): n['images'] += 1; continue
            target = resolve(page, src, by_source, base)
            if target is None: errors.append(f'{page}: image {src!r} is remote: the site must not load anything from the internet'); continue
            path, _ = target
            n['images'] += 1
            if not (cache/path).is_file(): errors.append(f'{page}: image {src!r}: no file {path} beside the notebooks'); continue
            (out/path).parent.mkdir(parents=True, exist_ok=True); shutil.copy2(cache/path, out/path)
            img['src'] = _rel(page, path)
    for path, frm in into_failed.items():
        errors.append(f'{path} is missing ({pages[path]["source"]} could not be processed, above), and {", ".join(sorted(frm))} link to it')
    return errors, n

# ---------------------------------------------------------------------------------------------------------------------
# 4. show_doc: every exported function and class documented on its page

def required_params(obj) -> list[str]:
    "Parameters of `obj` its show_doc should document: `self`, `**kwargs` and an inherited constructor's (not ours) aside."
    import inspect, dataclasses
    from fastcore.docments import DocmentText
    if inspect.isclass(obj) and not dataclasses.is_dataclass(obj):
        init = next((c.__dict__['__init__'] for c in obj.__mro__ if '__init__' in c.__dict__), None)
        try: src = inspect.getsourcefile(init)
        except TypeError: src = None
        if not src or not Path(src).resolve().is_relative_to(ROOT/'phoalign'): return []
    dm = DocmentText(obj).dm
    return [k for k, v in dm.items() if k != 'return' and v.get('anno') is not inspect.Parameter.VAR_KEYWORD]

def _top_level_split(code:str) -> list[str]:
    "Split a signature line's code at commas outside brackets and strings."
    parts, cur, depth, quote = [], '', 0, None
    for c in code:
        if quote:
            cur += c
            if c == quote: quote = None
            continue
        if c in '"\'': quote = c
        elif c in '([{': depth += 1
        elif c in ')]}': depth -= 1
        if c == ',' and depth == 0: parts.append(cur); cur = ''; continue
        cur += c
    return parts + [cur]

def documented_params(signature:str) -> tuple[set, set]:
    "Parameter names in a rendered show_doc signature, and those with a docments comment (`name:type=default, # what`)."
    names, documented = set(), set()
    for line in signature.splitlines()[1:]:
        line = line.strip()
        if not line or line.startswith(')'): continue
        code, _, comment = line.partition(' # ')
        got = [m.group(1) for p in _top_level_split(code) if (m := re.match(r'\s*\**(\w+)', p))]
        names.update(got)
        if comment.strip() and got: documented.add(got[-1])
    return names, documented

def show_doc_sections(soup) -> dict:
    "Rendered show_docs of a page: heading text -> the signature under it (None when there is none)."
    found = {}
    for h in soup.select('.output_markdown h2, .output_markdown h3, .output_markdown h4, .output_markdown h5'):
        sig = None
        for el in h.find_all_next():
            if el.name in ('h1', 'h2', 'h3', 'h4', 'h5', 'hr') and el is not h: break
            if el.name == 'pre' and re.search(r'\b(def|class)\s+[\w.]+\(', el.get_text()): sig = el.get_text(); break
        found.setdefault(h.get_text().strip(), sig)
    return found

def check_one(page:str, name:str, obj, sig:str|None) -> str|None:
    "What is wrong with the show_doc of `obj` rendered as `sig` on `page`, or None."
    import dataclasses
    if sig is None: return f'{page}: the show_doc of `{name}` is empty: a heading but no signature or parameters'
    want = required_params(obj)
    if dataclasses.is_dataclass(obj):
        # fastcore 1.12 reads no field comments of a dataclass defined in a notebook (`get_dataclass_source` gives up on
        # `__main__`), on this site as on Quarto's: the fields must be listed, and their comments must be in the module
        from fastcore.docments import docments
        names, _ = documented_params(sig)
        dm = docments(obj)
        missing = [f for f in want if f not in names]
        if missing: return f'{page}: the show_doc of `{name}` does not list the fields {", ".join(missing)}'
        bare = [f for f in want if not dm.get(f)]
        if bare: return f'{page}: the fields of `{name}` have no docments comment in the code: {", ".join(bare)}'
        return None
    names, documented = documented_params(sig)
    missing = [p for p in want if p not in documented]
    if want and not documented: return f'{page}: the show_doc of `{name}` has no parameter table: none of {", ".join(want)} is documented'
    if missing: return f'{page}: the show_doc of `{name}` leaves parameters undocumented: {", ".join(missing)} (add `# what it is` after each)'
    return None

def check_show_docs(pages:dict) -> tuple[list[str], int, int]:
    "Every function and class of each module's `__all__` (and every method shown) has its show_doc: a heading, a signature, documented parameters."
    import importlib, inspect, dataclasses
    errors, checked, n_dataclasses = [], 0, 0
    for page, info in sorted(pages.items()):
        soup, src = info.get('soup'), info['source']
        if soup is None or '/' in src: continue
        code = '\n'.join(''.join(c['source']) for c in json.loads((ROOT/'nbs'/src).read_text(encoding='utf-8'))['cells'] if c['cell_type'] == 'code')
        m = re.search(r'^#\|\s*default_exp\s+(\S+)', code, re.M)
        if not m or m.group(1) == '__main__': continue     # phoalign.__main__ runs the command when imported
        modname = f'phoalign.{m.group(1)}'
        try: mod = importlib.import_module(modname)
        except Exception as e: errors.append(f'{page}: cannot import {modname}: {e}'); continue
        shown = show_doc_sections(soup)
        for name in getattr(mod, '__all__', []):
            obj = getattr(mod, name, None)
            if not (inspect.isfunction(obj) or inspect.isclass(obj)) or getattr(obj, '__module__', None) != modname: continue
            checked += 1; n_dataclasses += dataclasses.is_dataclass(obj)
            if name not in shown: errors.append(f'{page}: `{name}` (in {modname}.__all__) has no show_doc on its page'); continue
            if (err := check_one(page, name, obj, shown[name])): errors.append(err)
        for title, sig in shown.items():          # methods shown too (`Class.method`, from @patch or a show_doc cell)
            cls_name, _, meth = title.partition('.')
            cls = getattr(mod, cls_name, None)
            attr = getattr(cls, meth, None) if meth and inspect.isclass(cls) else None
            if not (inspect.isfunction(attr) or inspect.ismethod(attr)): continue
            checked += 1
            if (err := check_one(page, title, attr, sig)): errors.append(err)
    return errors, checked, n_dataclasses

# ---------------------------------------------------------------------------------------------------------------------
# 5. browser: the pages as a reader sees them

def check_in_browser(out:Path, pages:dict, browse=BROWSE) -> tuple[list[str], list[Path], str|None]:
    "Open `browse` in headless Chromium: errors, failed requests, broken images; screenshots. Third value: why skipped."
    sys.path.insert(0, str(ROOT/'nbs'))
    from browser import Chromium, find_chromium, browser_required
    if find_chromium() is None:
        if browser_required(): return ['no Chromium found (PHOALIGN_REQUIRE_BROWSER=1): apt-get install chromium'], [], None
        return [], [], 'no Chromium found (set PHOALIGN_REQUIRE_BROWSER=1 to make this a failure)'
    errors, shots = [], []
    with Chromium(width=1280, height=900) as b:
        b.send('Network.setBlockedURLs', urls=['http://*', 'https://*', 'ws://*', 'wss://*'])   # offline: a remote request fails loudly
        for page in browse:
            if page not in pages or pages[page].get('failed'): errors.append(f'{page}: not rendered, cannot open it'); continue
            b.open((out/page).resolve().as_uri(), settle=0.3)
            errors += [f'{page} in Chromium: {e}' for e in b.errors]
            broken = b.evaluate('[...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.getAttribute("src"))')
            errors += [f'{page} in Chromium: image {s!r} did not load (naturalWidth 0)' for s in broken]
            facts = b.evaluate('({title: document.querySelector("h1.title")?.textContent || "", links: document.querySelectorAll(".sidebar a").length,'
                               ' text: document.querySelector("main")?.innerText.length || 0})')
            if not facts['title'] or facts['text'] < 200: errors.append(f'{page} in Chromium: the page looks empty ({facts})')
            if facts['links'] < 5: errors.append(f'{page} in Chromium: the sidebar has {facts["links"]} links')
            shots.append(b.screenshot(out/'screenshots'/(page.replace('/', '__').replace('.html', '.png'))))
    return errors, shots, None

# ---------------------------------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', help='folder for the pages and screenshots (default: a new temporary folder)')
    p.add_argument('--cached', action='store_true', help="reuse _proc/ for notebooks unchanged since the last run (nbdev's cache); default: process all")
    p.add_argument('--workers', type=int, help='processes for step 1 (default: the number of CPUs)')
    p.add_argument('--no-browser', action='store_true', help='skip step 5')
    p.add_argument('--browse', nargs='+', default=list(BROWSE), metavar='PAGE', help=f'pages to open in Chromium (default: {" ".join(BROWSE)})')
    a = p.parse_args(argv)
    t0 = time.time(); times = {}
    out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix='phoalign-docs-'))
    out.mkdir(parents=True, exist_ok=True)
    problems, notes = [], []

    cache, errs, warns = preprocess(force=not a.cached, workers=a.workers); problems += errs; notes += warns
    times['preprocess'] = time.time() - t0; t = time.time()
    pages, errs = render(cache, out, ROOT/'nbs'); problems += errs
    times['render'] = time.time() - t; t = time.time()
    errs, counts = check_links(pages, out, cache); problems += errs
    errs, n_docs, n_dc = check_show_docs(pages); problems += errs
    for page, info in pages.items():
        if 'soup' in info:
            (out/page).parent.mkdir(parents=True, exist_ok=True)
            (out/page).write_text(str(info['soup']), encoding='utf-8')
    times['links+show_doc'] = time.time() - t; t = time.time()
    shots, skipped = [], 'skipped (--no-browser)'
    if not a.no_browser:
        errs, shots, skipped = check_in_browser(out, pages, a.browse); problems += errs
    times['browser'] = time.time() - t

    print(f'docs check: {sum("soup" in i for i in pages.values())} pages rendered into {out}')
    print(f'  links: {counts["internal"]} into the site checked, {counts["external"]} to other sites not followed; {counts["images"]} images')
    print(f'  show_doc: {n_docs} exported functions, classes and methods checked ({n_dc} dataclasses: fields listed; their comments are '
          'checked in the code, as fastcore 1.12 does not render them for a class defined in a notebook)')
    print('  browser: ' + (skipped or f'{len(shots)} pages opened in Chromium, screenshots: ' + ', '.join(str(s) for s in shots)))
    print('  seconds: ' + ', '.join(f'{k} {v:.1f}' for k, v in times.items()) + f', total {time.time() - t0:.1f}')
    for n in notes: print(f'  note: {n}')
    if problems:
        print(f'\ndocs check FAILED: {len(problems)} problem{"s" * (len(problems) > 1)}:')
        for e in problems: print(f'  - {e}')
        return 1
    print('docs check passed')
    return 0

if __name__ == '__main__': sys.exit(main())
