"""DeepSpeed's ZeRO GPT peer (shared/peers/bench_ds_zero_gpt.py) with
`stage3_param_persistence_threshold` set from DS_PEER_PERSISTENCE, so that at stage 3 DeepSpeed
partitions and gathers every parameter (at its default of 1e5 the GPT's parameters are all
smaller and stay whole on every rank). Used by scripts/bench-zero3.sh; same arguments as the
peer. The patch sits at module level because the peer starts its ranks with spawn, which
imports this file again in every rank.
"""
import os
import sys

sys.path.insert(0, os.environ["DS_PEERS_DIR"])
import bench_ds_zero_gpt as peer  # noqa: E402

_peer_config = peer.ds_config


def ds_config(args, world):
    cfg = _peer_config(args, world)
    cfg["zero_optimization"]["stage3_param_persistence_threshold"] = int(
        os.environ.get("DS_PEER_PERSISTENCE", "100000"))
    return cfg


peer.ds_config = ds_config

if __name__ == "__main__":
    peer.main()
