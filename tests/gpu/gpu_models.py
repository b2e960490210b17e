"""Models for the GPU tests; imported by model processes, so torch is imported in `setup`."""

from __future__ import annotations


class TorchCudaMLP:
    """A fixed-weight torch MLP that takes its batch on the GPU (input_array = "torch") and
    answers a device tensor, so both the DLPack hand-off and the copy out are exercised."""

    input_array = "torch"

    def setup(self, device: str) -> None:
        import torch

        torch.manual_seed(0)
        self.torch = torch
        self.device = device
        self.net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).to(device)

    def predict(self, batch):
        assert isinstance(batch, self.torch.Tensor) and batch.is_cuda, type(batch)
        with self.torch.no_grad():
            return self.net(batch)
