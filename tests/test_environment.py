"""torch_threads pins torch's CPU threads (another count rounds sums differently: a CPU run ends elsewhere),
and metrics.json records what decides a run's bits besides the config."""

from __future__ import annotations

import pytest
import torch


def test_torch_threads_pins_the_kernel_threads_and_refuses_nonsense():
    from insarslide.training.run import set_threads

    before = torch.get_num_threads()
    try:
        set_threads(1)
        assert torch.get_num_threads() == 1
        set_threads(None)  # null: left as it is
        assert torch.get_num_threads() == 1
        with pytest.raises(ValueError, match="torch_threads=0"):
            set_threads(0)
    finally:
        torch.set_num_threads(before)


def test_the_environment_names_versions_threads_and_instruction_set():
    from insarslide.training.run import compute_environment

    env = compute_environment()
    assert env["torch"] == torch.__version__ and env["torch_threads"] == torch.get_num_threads()
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_quickstart_pins_two_threads(tmp_path):
    from conftest import compose_train

    assert compose_train(["experiment=quickstart"], tmp_path).torch_threads == 2
    assert compose_train([], tmp_path).torch_threads is None
