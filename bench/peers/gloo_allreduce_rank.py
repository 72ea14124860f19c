"""Peer benchmark: torch.distributed all_reduce over gloo, one rank per process (for ranks
on different hosts, e.g. network namespaces). The measurement of gloo_allreduce.py, with
30 calls at 16 MB as bench/collective.ts's namespace mode times its own.
Usage: /usr/bin/python3 gloo_allreduce_rank.py WORLD_SIZE RANK
Environment: MASTER_ADDR, MASTER_PORT, GLOO_SOCKET_IFNAME. Rank 0 prints one JSON line
per message size: p50 microseconds and algorithm bandwidth."""
import sys, torch.distributed as dist
from gloo_allreduce import measure
world, rank = int(sys.argv[1]), int(sys.argv[2])
dist.init_process_group('gloo', rank=rank, world_size=world)
measure(rank, world, large_iters=30)
dist.destroy_process_group()
