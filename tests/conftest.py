import torch

# Two cores on CI: keep intra-op threads low so tests running side by side don't thrash.
torch.set_num_threads(1)
