"""A DataLoader with two worker processes whose dataset raises ValueError for index 5 (worker 1's)."""

import torch
from torch.utils.data import DataLoader, Dataset


class Squares(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, index):
        square = index * index  # a local the tests read back in the failing frame
        if index == 5:
            raise ValueError(f"bad sample {index}")
        return torch.tensor(square)


if __name__ == "__main__":
    for batch in DataLoader(Squares(), batch_size=1, num_workers=2):
        print("batch", int(batch), flush=True)
