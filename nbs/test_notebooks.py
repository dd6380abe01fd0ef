"""One pytest test per notebook: runs its cells as `nbdev_test` does, skipping the `tst_flags` (notest slow cuda)."""
import os
from pathlib import Path
import pytest
from nbdev.config import get_config
from nbdev import test as nbdev_test  # not `import test_nb`: pytest would collect it

here = Path(__file__).parent
notebooks = sorted(p for p in here.rglob('*.ipynb')
                   if not any(part.startswith(('.', '_')) for part in p.relative_to(here).parts))
skip_flags = get_config().tst_flags.split()
force_flags = os.environ.get('PHOALIGN_TEST_FLAGS', '').split()  # e.g. "slow" to run slow cells too

# the notebooks of 16 s or more under `pytest nbs -n 2 --durations=0` on 2 cores: `-m "not slow"` leaves them out, CI runs them
SLOW = {'08_train.ipynb', '10e_search.ipynb', '10c_cir.train.ipynb', '12_tune.ipynb', '12a_cifar.ipynb', 'tutorials/cir_moe.ipynb',
        'tutorials/heads.ipynb', 'tutorials/phoclip.ipynb', 'tutorials/search.ipynb', 'tutorials/vignn_clip.ipynb'}
cases = [pytest.param(p, marks=pytest.mark.slow) if p.relative_to(here).as_posix() in SLOW else p for p in notebooks]

@pytest.mark.parametrize('notebook', cases, ids=[str(p.relative_to(here)) for p in notebooks])
def test_notebook(notebook):
    ok, seconds = nbdev_test.test_nb(notebook, skip_flags=skip_flags, force_flags=force_flags, showerr=True)
    assert ok, f'{notebook.name} failed (the traceback is in the captured stderr above)'
