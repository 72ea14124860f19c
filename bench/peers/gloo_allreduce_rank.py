"""Peer benchmark: torch.distributed all_reduce over gloo, one rank per process (for ranks
on different hosts, e.g. network namespaces). The measurement of gloo_allreduce.py.
Usage: /usr/bin/python3 gloo_allreduce_rank.py WORLD_SIZE RANK
Environment: MASTER_ADDR, MASTER_PORT, GLOO_SOCKET_IFNAME. Rank 0 prints one JSON line
per message size: p50 microseconds and algorithm bandwidth."""
import json, os, sys, time, torch, torch.distributed as dist
world, rank = int(sys.argv[1]), int(sys.argv[2])
dist.init_process_group('gloo', rank=rank, world_size=world)
for n in [512, 262144, 4194304]:
    t = torch.ones(n)
    for _ in range(5): dist.all_reduce(t)
    dist.barrier(); it = 50 if n < 1e6 else 10
    times = []
    for _ in range(it):
        s = time.perf_counter(); dist.all_reduce(t); times.append(time.perf_counter() - s)
    times.sort(); p50 = times[len(times) // 2]
    if rank == 0: print(json.dumps({'peer': 'gloo', 'world': world, 'floats': n, 'p50_us': p50 * 1e6, 'algbw_GBps': n * 4 / p50 / 1e9}), flush=True)
dist.destroy_process_group()
