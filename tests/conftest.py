import os, pytest

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
