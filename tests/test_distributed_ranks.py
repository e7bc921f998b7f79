"""The rank helpers without a process group: the answers of a single process."""

import torch.distributed as dist

from loopkit.distributed import is_distributed, is_main_process, rank, world_size


def test_without_a_process_group_this_is_rank_0_of_1_and_the_writer():
    assert not dist.is_initialized()
    assert (is_distributed(), rank(), world_size(), is_main_process()) == (False, 0, 1, True)


def test_with_a_process_group_the_answers_come_from_it():
    # A one-process gloo group in this process (a HashStore needs no port): rank and size are the group's.
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        assert (is_distributed(), rank(), world_size(), is_main_process()) == (True, 0, 1, True)
    finally:
        dist.destroy_process_group()
    assert not is_distributed()
