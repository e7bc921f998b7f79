"""The rank helpers: from the process group, from torchrun's variables before there is one, else one process."""

import torch.distributed as dist

from loopkit.distributed import is_distributed, is_main_process, rank, world_size


def test_without_a_process_group_or_torchrun_this_is_rank_0_of_1_and_the_writer(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not dist.is_initialized()
    assert (is_distributed(), rank(), world_size(), is_main_process()) == (False, 0, 1, True)


def test_before_the_group_exists_torchruns_variables_answer(monkeypatch):
    # What rank 1 of a torchrun launch sees before Distributed builds the group (a logger made in the script).
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert (is_distributed(), rank(), world_size(), is_main_process()) == (False, 1, 2, False)


def test_with_a_process_group_the_answers_come_from_it(monkeypatch):
    monkeypatch.setenv("RANK", "1")  # the group's answer wins over the environment's
    # A one-process gloo group in this process (a HashStore needs no port): rank and size are the group's.
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        assert (is_distributed(), rank(), world_size(), is_main_process()) == (True, 0, 1, True)
    finally:
        dist.destroy_process_group()
    assert not is_distributed()
