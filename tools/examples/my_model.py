#!/usr/bin/python3
"""Bring your own model and data to filo, end to end.

1. defines a small CNN in PyTorch and saves it as TorchScript (what model.path takes);
2. writes a dataset in filo's NumPy format (here: Fashion-MNIST, read from Debian's
   dataset-fashion-mnist, standing in for your own arrays);
3. trains it with one filo command on a local cluster of 3 nodes;
4. loads the trained model back in Python and scores it.

    /usr/bin/python3 tools/examples/my_model.py [--out DIR] [--train-limit N] [--epochs E]

Run it from the repository after `tools/setup.sh --tests` (it calls build/filo and needs python3-torch).
"""
import argparse
import gzip
import os
import subprocess
import sys

import numpy as np
import torch


class MyCnn(torch.nn.Module):
    """Any scriptable module: logits [N, classes] from images [N, C, H, W]."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 16, 3, padding=1)
        self.norm1 = torch.nn.BatchNorm2d(16)
        self.conv2 = torch.nn.Conv2d(16, 32, 3, padding=1)
        self.head = torch.nn.Linear(32 * 7 * 7, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.max_pool2d(torch.relu(self.norm1(self.conv1(x))), 2)
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.head(x.flatten(1))


def read_idx(path: str) -> np.ndarray:
    """An idx file (MNIST's format) as a NumPy array."""
    with gzip.open(path, "rb") as file:
        data = file.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def write_numpy_dataset(directory: str, train_limit: int) -> None:
    """filo's NumPy format: four .npy files. Images are [N, H, W] or [N, C, H, W]; uint8 images
    are scaled to [0, 1] and normalised with the training set's statistics by filo; labels int64."""
    source = "/usr/share/datasets/fashion-mnist"
    os.makedirs(directory, exist_ok=True)
    for split, prefix, limit in (("train", "train", train_limit), ("test", "t10k", 2000)):
        images = read_idx(f"{source}/{prefix}-images-idx3-ubyte.gz")[:limit]
        labels = read_idx(f"{source}/{prefix}-labels-idx1-ubyte.gz")[:limit].astype(np.int64)
        np.save(f"{directory}/{split}_inputs.npy", images[:, None, :, :])  # [N, 1, 28, 28] uint8
        np.save(f"{directory}/{split}_labels.npy", labels)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/my-model", help="where the model, data and run go")
    parser.add_argument("--train-limit", type=int, default=60000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--filo", default="build/filo")
    parser.add_argument("--min-accuracy", type=float, default=0.0, help="fail below this (the tests: 0.5)")
    arguments = parser.parse_args()
    out = arguments.out
    os.makedirs(out, exist_ok=True)

    torch.manual_seed(0)
    torch.jit.script(MyCnn()).save(f"{out}/my_cnn.pt")
    write_numpy_dataset(f"{out}/data", arguments.train_limit)

    # The one command: a coordinator and 3 nodes on this machine, CurveZMQ keys made for the run.
    command = [arguments.filo, "local", "--nodes", "3", "--epochs", str(arguments.epochs),
               "--run-dir", f"{out}/run", "--web", "off",
               "--set", f"model.path={out}/my_cnn.pt", "--set", "model.task=classification",
               "--set", "data.format=numpy", "--set", f"data.path={out}/data"]
    print("$", " ".join(command), flush=True)
    if subprocess.call(command) != 0:
        return 1

    # The result loads like any TorchScript module; feed it as filo did (normalised inputs).
    import json
    summary = json.load(open(f"{out}/run/summary.json"))
    model = torch.jit.load(f"{out}/run/model.pt").eval()
    raw = open(f"{out}/run/model.safetensors", "rb").read()
    metadata = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])["__metadata__"]
    mean, std = json.loads(metadata["mean"])[0], json.loads(metadata["std"])[0]
    images = torch.from_numpy(np.load(f"{out}/data/test_inputs.npy")).float() / 255.0
    labels = torch.from_numpy(np.load(f"{out}/data/test_labels.npy"))
    with torch.no_grad():
        accuracy = (model((images - mean) / std).argmax(1) == labels).float().mean().item()
    print(f"filo's test accuracy {summary['final_test_accuracy']:.4f}; "
          f"the same model loaded in Python: {accuracy:.4f}")
    if abs(accuracy - summary["final_test_accuracy"]) >= 1e-3 or accuracy < arguments.min_accuracy:
        print(f"FAILED: Python's accuracy differs from filo's, or is below {arguments.min_accuracy}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
