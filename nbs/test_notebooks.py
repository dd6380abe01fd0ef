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

@pytest.mark.parametrize('notebook', notebooks, ids=[str(p.relative_to(here)) for p in notebooks])
def test_notebook(notebook):
    ok, seconds = nbdev_test.test_nb(notebook, skip_flags=skip_flags, force_flags=force_flags, showerr=True)
    assert ok, f'{notebook.name} failed (the traceback is in the captured stderr above)'
