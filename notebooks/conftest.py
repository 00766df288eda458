"""The notebooks run as tests (nbmake) in kernels that inherit this environment: one intra-op thread each, as the
tests have (tests/conftest.py). Their tensors are tiny, and on the loaded 2-core machine a second thread only spins:
notebook 01's 1000-step sampling cell took 26.5 s with the default threads and 3.1 s with one."""
import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
