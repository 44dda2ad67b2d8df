"""Test-suite settings: tiny tensors run fastest on one intra-op thread (no OpenMP hand-offs); Ctrl-C behaves as
in a terminal even when the suite runs as a background job."""

import signal

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True, scope="session")
def _interactive_sigint():
    """A background job (``cmd &`` in a script, nohup) starts with SIGINT ignored, and kuosan keeps ignoring it, as it
    should; the Ctrl-C tests simulate a terminal, so the suite (and the commands it starts) gets Python's own
    handler back for its duration."""
    old = signal.getsignal(signal.SIGINT)
    if old is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    if old is signal.SIG_IGN:
        signal.signal(signal.SIGINT, old)
