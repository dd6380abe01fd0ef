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
