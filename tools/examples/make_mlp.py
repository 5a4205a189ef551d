#!/usr/bin/python3
"""A model of GPU-fleet proportions for measuring what crosses the wire: a scripted MLP
784-1024-1024-10 (1.86 M parameters, 7.4 MB in fp32) for Fashion-MNIST, given to filo as
`model.path`. The built-in CNN (about 30k parameters) is too small for bytes to matter.

    /usr/bin/python3 tools/examples/make_mlp.py mlp.pt
    build/filo local --nodes 2 --epochs 1 --web off --set model.path=mlp.pt --set data.train_limit=12000
"""
import sys

import torch


class Mlp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(784, 1024)
        self.b = torch.nn.Linear(1024, 1024)
        self.c = torch.nn.Linear(1024, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_mlp.py OUTPUT.pt")
    torch.manual_seed(0)
    model = Mlp()
    torch.jit.script(model).save(sys.argv[1])
    print(f"{sys.argv[1]}: {sum(p.numel() for p in model.parameters())} parameters")
