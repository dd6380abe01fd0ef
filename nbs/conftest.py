"""pytest setup for phoalign: tests never touch the network, and plots render headless."""
import os
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('MPLBACKEND', 'Agg')

# pytest -n N: each worker's torch (and the CLI processes it starts) gets its share of the cores, not all of them each
_workers = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
if _workers > 1:
    _threads = str(max(1, (os.cpu_count() or 1) // _workers))
    for _var in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS'): os.environ.setdefault(_var, _threads)

def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: a test of minutes (the README as a test, the longest notebooks); '
                            '`pytest nbs -m "not slow"` leaves them out, CI runs them all')

import signal
import pytest

@pytest.fixture(autouse=True)
def _ctrl_c_restored(request):
    """Ctrl-C as each test found it. A test that reroutes it in Python fails; the handler is also installed again after every
    test, because a library that ignores SIGINT from C leaves no trace in Python, and every later child of this worker
    (`Popen` of `phoalign ...`) would inherit the ignoring and never stop on Ctrl-C."""
    before = signal.getsignal(signal.SIGINT)
    yield
    after = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, before)
    if after is not before: pytest.fail(f'{request.node.nodeid} left the Ctrl-C handler changed ({after!r}, was {before!r})')

def pytest_collection_modifyitems(config, items):
    """The longest tests first (the README's sections, then the other slow ones): under `-n 2` the quick tests then fill the
    end, so neither worker is left running one long test alone (in collection order the README's came last)."""
    items.sort(key=lambda item: 0 if item.path.name == 'test_readme.py' else 1 if item.get_closest_marker('slow') else 2)
