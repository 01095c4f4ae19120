import os, sys
from pathlib import Path
import pytest

# "auto" precision would pick bf16 on CPUs with AMX / AVX-512 BF16: the suite's figures must not depend on the CPU
if "--runcuda" not in sys.argv: os.environ["INSTANT3D_BF16"] = "0"
EXE = str(Path(sys.executable).parent / "instant3d")  # the console script of this environment
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")  # for CLI runs in a subprocess: offline, one thread


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    "A tiny random diffusion teacher folder (written by `tiny_train_config`), for the trainer and baseline tests."
    from instant3d.train_config import tiny_train_config
    d = tmp_path_factory.mktemp("tiny") / "teacher"
    tiny_train_config(d)
    return d

def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="run tests marked slow")
    parser.addoption("--runcuda", action="store_true", help="run tests marked cuda (needs a GPU)")

def pytest_configure(config):
    config.addinivalue_line("markers", "slow: minutes on CPU; skipped unless --runslow")
    config.addinivalue_line("markers", "cuda: needs a CUDA device; skipped unless --runcuda")

def pytest_collection_modifyitems(config, items):
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(pytest.mark.skip(reason="slow: pass --runslow"))
        if "cuda" in item.keywords and not config.getoption("--runcuda"):
            item.add_marker(pytest.mark.skip(reason="cuda: pass --runcuda on a GPU machine"))
