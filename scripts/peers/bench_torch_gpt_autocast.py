"""PyTorch peer for ds's bf16 GPT step: shared/peers/bench_torch_gpt.py's model, data and
optimizer, with the forward pass (model and loss) under torch.autocast("cpu", bfloat16), as
PyTorch recommends for bf16 mixed precision on the CPU (backward and the AdamW step outside it,
fp32 master weights). Prints that script's line, prefixed by the mode.

usage: OMP_NUM_THREADS=T python bench_torch_gpt_autocast.py PATH/TO/bench_torch_gpt.py T [its flags]
"""
import importlib.util
import sys

import torch


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    path = sys.argv.pop(1)
    spec = importlib.util.spec_from_file_location("bench_torch_gpt", path)
    peer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peer)
    peer.Gpt.forward = torch.autocast("cpu", dtype=torch.bfloat16)(peer.Gpt.forward)
    print("autocast bf16: ", end="", flush=True)
    peer.main()


if __name__ == "__main__":
    main()
