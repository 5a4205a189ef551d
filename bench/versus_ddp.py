#!/usr/bin/python3
"""filo against PyTorch DDP: one model, one data set, the same trainers, in one run.

It defines a CNN in PyTorch (about 0.42 M parameters), saves it from seed-fixed initial weights as
TorchScript, and trains it to the same schedule twice per scenario:

  PyTorch DDP  3 processes (one per rank), backend gloo over 127.0.0.1, 1 thread each, the eager
               module loaded with the same initial weights;
  filo         `filo local --nodes 3` with `model.path` set to the TorchScript file (3 trainer
               processes and a coordinator), 1 LibTorch thread each.

Both train Fashion-MNIST (the idx files of Debian's dataset-fashion-mnist), scaled to [0, 1] and
normalised with 0.2860 / 0.3530 (what filo computes for it), with Adam at lr 1e-3 and a global
batch of 126 samples a step (filo's `schedule.round_samples`; DDP: 42 per rank; 128 does not split
in 3). Every epoch visits the samples in filo's own epoch order (`epoch_order`, re-implemented
below and checked against filo's pinned values): DDP's step k takes positions [126 k, 126 k + 126)
of it, rank r the r-th third, as filo's round k takes those positions, split by speed.

Scenarios: `equal` (no slowdown) and `1:2:4`, where trainer / rank i is made f_i times slower by
filo's `--slowdowns` rule: a micro-batch whose work took t seconds lasts f_i t in all, t being its
CPU time when that is less than its wall time (README, "Uneven machines"). For a DDP rank the work
is one step: forward, backward (its gradient all-reduce included) and Adam's step. t is the step's
CPU time on the rank's main thread (time.thread_time(); with 1 intra-op thread the CPU autograd
engine runs the backward on that thread, while gloo's all-reduce runs on gloo's threads and so is
not stretched, as filo stretches no transfer), capped by the step's wall time; after the step the
rank sleeps until f_i t has passed since the step began. A wait for the CPU that another rank on the
same core held counts toward f_i t, as in filo. Sleeping after the all-reduce rather than before
gives the same steady state: the slow rank's next gradient arrives f_i t after its last one.

Each trainer is held to the same CPUs on both sides: `--cpus 0/1/1` (default; 2 cores) pins rank i
and filo's node i to the i-th CPU list (os.sched_setaffinity / `--node-cpus`), and filo's
coordinator to `--coordinator-cpus` (default: the last list); `--cpus none` pins nothing.

    /usr/bin/python3 bench/versus_ddp.py [--filo build/filo] [--epochs 2] [--scenarios equal,1:2:4]
                                         [--cpus 0/1/1|none] [--out /tmp/filo-versus-ddp]
                                         [--train-limit N] [--test-limit N]

It prints, per scenario and side: the time to 0.88 test accuracy (training seconds at the end of
the first epoch whose test accuracy is at least 0.88; "not reached" and the best accuracy if none
is), samples/s over the training (samples trained ÷ training seconds), the test accuracy after each
epoch, and filo ÷ DDP for the time (below 1: filo is faster) and for samples/s (above 1: filo is
faster). Training seconds exclude start-up: filo's are its summary's `epoch_end_seconds` (from its
first round, after calibration, to the close of each epoch's last round), DDP's run from a barrier
after start-up to a barrier after each epoch's last step. DDP's rank 0 scores the test set between
epochs, outside the timed part; filo scores it on a thread of the coordinator while the next epoch
trains, so filo's training seconds include that evaluation's competition for the CPU. Results also
go to OUT/versus_ddp.json; logs and filo's run directories to OUT/.

The machine should be quiet: under each table it prints the CPU time that other processes took
while each side ran (machine busy time from /proc/stat less the bench's own) and warns above 5%.
"""
import argparse
import gzip
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np

RANKS = 3
TARGET_ACCURACY = 0.88
FASHION_MNIST_MEAN = 0.2860  # what filo computes from the training images
FASHION_MNIST_STD = 0.3530
MASK64 = (1 << 64) - 1
RUN_TIMEOUT_SECONDS = 30 * 60
NOISY_FRACTION = 0.05  # other processes' share of the machine's CPU above which a run is flagged


# ---------------------------------------------------------------------------------------- model --
def model_class():
    import torch

    class BenchCnn(torch.nn.Module):
        """conv 3x3 1→32, BN, relu, pool; conv 3x3 32→64, BN, relu, pool; linear 3136→128, relu;
        linear 128→10."""

        def __init__(self, classes: int = 10):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(1, 32, 3, padding=1)
            self.norm1 = torch.nn.BatchNorm2d(32)
            self.conv2 = torch.nn.Conv2d(32, 64, 3, padding=1)
            self.norm2 = torch.nn.BatchNorm2d(64)
            self.hidden = torch.nn.Linear(64 * 7 * 7, 128)
            self.head = torch.nn.Linear(128, classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.nn.functional.max_pool2d(torch.relu(self.norm1(self.conv1(x))), 2)
            x = torch.nn.functional.max_pool2d(torch.relu(self.norm2(self.conv2(x))), 2)
            return self.head(torch.relu(self.hidden(x.flatten(1))))

    return BenchCnn


# ----------------------------------------------------------------------------------------- data --
def read_idx(path):
    with gzip.open(path, "rb") as file:
        data = file.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_split(directory, prefix, limit):
    """Images as normalised float32 [N, 1, 28, 28], labels int64, the first `limit` (0: all)."""
    images = read_idx(f"{directory}/{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(f"{directory}/{prefix}-labels-idx1-ubyte.gz")
    if limit:
        images, labels = images[:limit], labels[:limit]
    inputs = (images.astype(np.float32) / 255.0 - FASHION_MNIST_MEAN) / FASHION_MNIST_STD
    return inputs[:, None, :, :], labels.astype(np.int64)


def splitmix64(state):
    state = (state + 0x9E3779B97F4A7C15) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


def epoch_order(seed, epoch, size):
    """filo's epoch order (actors/learning/epoch_order.cpp): Fisher-Yates driven by splitmix64."""
    values = list(range(size))
    state = ((seed * 0x100000001B3) & MASK64) ^ epoch
    for i in range(size - 1, 0, -1):
        state, random = splitmix64(state)
        j = random % (i + 1)
        values[i], values[j] = values[j], values[i]
    return np.array(values, dtype=np.int64)


def check_epoch_order():
    """The values tests/test_scheduler.cpp pins for filo's epoch_order."""
    assert epoch_order(1, 1, 10).tolist() == [3, 6, 9, 7, 8, 2, 0, 4, 1, 5]
    assert epoch_order(7, 2, 12).tolist() == [10, 5, 4, 2, 9, 6, 3, 0, 7, 1, 8, 11]
    assert epoch_order(1, 3, 60000)[:6].tolist() == [54569, 10947, 52324, 24161, 21976, 40818]


def parse_cpu_list(text):
    cpus = set()
    for part in text.split(","):
        if "-" in part:
            low, high = part.split("-")
            cpus.update(range(int(low), int(high) + 1))
        elif part:
            cpus.add(int(part))
    return sorted(cpus)


# ------------------------------------------------------------------------------------ DDP rank --
def run_rank(arguments):
    """One DDP rank: pinned, 1 thread, trains and writes its figures to --result."""
    if arguments.rank_cpus:
        os.sched_setaffinity(0, parse_cpu_list(arguments.rank_cpus))  # before torch starts threads
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    rank, world = arguments.rank, RANKS
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{arguments.port}", rank=rank,
                            world_size=world)
    train_x, train_y = load_split(arguments.data, "train", arguments.train_limit)
    train_x, train_y = torch.from_numpy(train_x), torch.from_numpy(train_y)
    if rank == 0:
        test_x, test_y = load_split(arguments.data, "t10k", arguments.test_limit)
        test_x, test_y = torch.from_numpy(test_x), torch.from_numpy(test_y)
    size = train_x.shape[0]
    orders = [epoch_order(arguments.seed, epoch, size) for epoch in range(1, arguments.epochs + 1)]

    model = model_class()()
    model.load_state_dict(torch.load(f"{arguments.out}/initial_state.pt"))
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.Adam(ddp.parameters(), lr=arguments.lr)
    slowdown = arguments.slowdown
    figures = {"rank": rank, "slowdown": slowdown, "cpus": sorted(os.sched_getaffinity(0)),
               "steps": 0, "samples": 0, "compute_seconds": 0.0, "process_cpu_seconds": 0.0,
               "slowdown_sleep_seconds": 0.0}
    epoch_end_seconds, accuracies, train_losses, samples_per_epoch = [], [], [], []
    training_seconds = 0.0
    dist.barrier()
    for epoch, order in enumerate(orders, start=1):
        loss_sum, epoch_samples = 0.0, 0
        ddp.train()
        dist.barrier()
        started = time.perf_counter()
        for begin in range(0, size, arguments.batch):
            positions = order[begin : begin + arguments.batch]
            parts = np.array_split(positions, world)
            if min(len(part) for part in parts) == 0:
                continue  # fewer samples than ranks left: no rank may sit out a DDP step
            indices = torch.from_numpy(parts[rank])
            inputs, labels = train_x[indices], train_y[indices]
            step_wall, step_cpu, process_cpu = time.perf_counter(), time.thread_time(), time.process_time()
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(ddp(inputs), labels)
            loss.backward()  # DDP all-reduces the gradients (mean over ranks) inside
            optimizer.step()
            now = time.perf_counter()
            busy = min(now - step_wall, time.thread_time() - step_cpu)
            figures["compute_seconds"] += busy
            figures["process_cpu_seconds"] += time.process_time() - process_cpu
            if slowdown > 1.0:
                until = step_wall + slowdown * busy  # the step lasts slowdown × busy in all
                if until > now:
                    time.sleep(until - now)
                    figures["slowdown_sleep_seconds"] += until - now
            figures["steps"] += 1
            figures["samples"] += len(indices)
            loss_sum += loss.item() * len(indices)
            epoch_samples += len(indices)
        dist.barrier()  # the epoch ends when every rank's last step (and its wait) is over
        training_seconds += time.perf_counter() - started
        totals = torch.tensor([loss_sum, float(epoch_samples)], dtype=torch.float64)
        dist.all_reduce(totals)
        if rank == 0:  # outside the timed part; the other ranks wait at the next barrier
            model.eval()
            with torch.no_grad():
                correct = sum(int((model(test_x[i : i + 1000]).argmax(1) == test_y[i : i + 1000]).sum())
                              for i in range(0, test_x.shape[0], 1000))
            accuracies.append(correct / test_x.shape[0])
            epoch_end_seconds.append(training_seconds)
            train_losses.append(totals[0].item() / totals[1].item())
            samples_per_epoch.append(int(totals[1].item()))
            print(f"DDP epoch {epoch}: test accuracy {accuracies[-1]:.4f}, train loss "
                  f"{train_losses[-1]:.4f}, {samples_per_epoch[-1]} samples, {training_seconds:.1f} s "
                  "of training", flush=True)
    if rank == 0:
        figures.update({"test_accuracy_per_epoch": accuracies, "epoch_end_seconds": epoch_end_seconds,
                        "train_loss_per_epoch": train_losses, "samples_per_epoch": samples_per_epoch,
                        "training_seconds": training_seconds})
    with open(arguments.result, "w") as file:
        json.dump(figures, file)
    dist.barrier()
    dist.destroy_process_group()
    return 0


# --------------------------------------------------------------------------------------- driver --
class OtherLoad:
    """CPU seconds that processes other than this bench's spent on this machine while it ran a side:
    the busy time of /proc/stat less this process's and its reaped descendants' CPU time. On a
    shared machine a side that others took CPU from measures slower than it is."""

    def __init__(self):
        self.started = time.perf_counter()
        self.busy = self.machine_busy_seconds()
        self.own = self.own_seconds()

    @staticmethod
    def machine_busy_seconds():
        with open("/proc/stat") as file:
            fields = [int(value) for value in file.readline().split()[1:]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def own_seconds():
        total = 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            usage = resource.getrusage(who)
            total += usage.ru_utime + usage.ru_stime
        return total

    def figures(self):
        wall = time.perf_counter() - self.started
        other = max(0.0, (self.machine_busy_seconds() - self.busy) - (self.own_seconds() - self.own))
        return {"wall_seconds": wall, "other_cpu_seconds": other,
                "other_cpu_fraction": other / (wall * (os.cpu_count() or 1))}


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop(processes):
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_ddp(arguments, name, slowdowns, cpu_lists):
    directory = f"{arguments.out}/ddp-{name}"
    os.makedirs(directory, exist_ok=True)
    port = free_port()
    environment = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    processes, logs = [], []
    other_load = OtherLoad()
    try:
        for rank in range(RANKS):
            command = [sys.executable, os.path.abspath(__file__), "--rank", str(rank), "--port", str(port),
                       "--slowdown", str(slowdowns[rank]), "--result", f"{directory}/rank{rank}.json",
                       "--out", arguments.out, "--data", arguments.data, "--epochs", str(arguments.epochs),
                       "--train-limit", str(arguments.train_limit), "--test-limit", str(arguments.test_limit),
                       "--batch", str(arguments.batch), "--lr", str(arguments.lr), "--seed", str(arguments.seed)]
            if cpu_lists:
                command += ["--rank-cpus", cpu_lists[rank]]
            logs.append(open(f"{directory}/rank{rank}.log", "w"))
            processes.append(subprocess.Popen(command, stdout=logs[-1], stderr=subprocess.STDOUT,
                                              env=environment))
        deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
        while any(process.poll() is None for process in processes):
            if any(process.poll() not in (None, 0) for process in processes) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        stop(processes)
        for log in logs:
            log.close()
    failed = [rank for rank, process in enumerate(processes) if process.returncode != 0]
    if failed:
        raise RuntimeError(f"DDP rank(s) {failed} failed; see {directory}/rank*.log")
    ranks = [json.load(open(f"{directory}/rank{rank}.json")) for rank in range(RANKS)]
    result = {key: ranks[0][key] for key in ("test_accuracy_per_epoch", "epoch_end_seconds",
                                             "train_loss_per_epoch", "samples_per_epoch",
                                             "training_seconds")}
    result.update(other_load.figures())
    result["trainers"] = [{key: rank[key] for key in ("rank", "slowdown", "cpus", "steps", "samples",
                                                      "compute_seconds", "process_cpu_seconds",
                                                      "slowdown_sleep_seconds")} for rank in ranks]
    return result


def run_filo(arguments, name, slowdowns, cpu_lists, coordinator_cpus):
    run_dir = f"{arguments.out}/filo-{name}"
    shutil.rmtree(run_dir, ignore_errors=True)
    command = [arguments.filo, "local", "--nodes", str(RANKS), "--epochs", str(arguments.epochs),
               "--run-dir", run_dir, "--web", "off",
               "--set", f"model.path={arguments.out}/model.pt", "--set", "model.task=classification",
               "--set", "data.format=idx", "--set", f"data.path={arguments.data}",
               "--set", f"data.train_limit={arguments.train_limit}",
               "--set", f"data.test_limit={arguments.test_limit}",
               "--set", f"schedule.round_samples={arguments.batch}", "--set", f"schedule.seed={arguments.seed}",
               "--set", "optimizer.mode=gradient", "--set", "optimizer.name=adam",
               "--set", f"optimizer.learning_rate={arguments.lr}", "--set", "node.threads=1",
               "--set", "run.threads=1"]
    if any(factor != 1 for factor in slowdowns):
        command += ["--slowdowns", ",".join(f"{factor:g}" for factor in slowdowns)]
    if cpu_lists:
        command += ["--node-cpus", "/".join(cpu_lists), "--set", f"run.cpus={coordinator_cpus}"]
    other_load = OtherLoad()
    with open(f"{arguments.out}/filo-{name}.log", "w") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, timeout=RUN_TIMEOUT_SECONDS)
    if code != 0:
        raise RuntimeError(f"filo exited {code}; see {arguments.out}/filo-{name}.log")
    summary = json.load(open(f"{run_dir}/summary.json"))
    result = {key: summary[key] for key in ("test_accuracy_per_epoch", "epoch_end_seconds",
                                            "train_loss_per_epoch", "samples_per_epoch")}
    # summary.json's training_seconds runs on to the last epoch's evaluation; the training itself
    # ends with the last epoch's last round.
    result["training_seconds"] = summary["epoch_end_seconds"][-1]
    result["summary_training_seconds"] = summary["training_seconds"]
    result.update(other_load.figures())
    result["rounds"] = summary.get("rounds")
    result["trainers"] = summary.get("nodes")
    result["command"] = command
    return result


def time_to_target(result):
    for accuracy, seconds in zip(result["test_accuracy_per_epoch"], result["epoch_end_seconds"]):
        if accuracy >= TARGET_ACCURACY:
            return seconds
    return None


def add_figures(result):
    result["time_to_target_seconds"] = time_to_target(result)
    result["samples_per_second"] = sum(result["samples_per_epoch"]) / result["training_seconds"]


def print_scenario(name, slowdowns, pinning, sides):
    print(f"\n{name}: slowdowns {':'.join(f'{f:g}' for f in slowdowns)}, {pinning}")
    print(f"{'':14}{'time to ' + str(TARGET_ACCURACY):>22}{'training s':>12}{'samples/s':>11}"
          "   test accuracy per epoch")
    for label, result in sides:
        target = result["time_to_target_seconds"]
        if target is None:
            shown = f"not reached ({max(result['test_accuracy_per_epoch']):.4f})"
        else:
            epoch = next(i for i, a in enumerate(result["test_accuracy_per_epoch"], 1) if a >= TARGET_ACCURACY)
            shown = f"{target:.1f} s (epoch {epoch})"
        accuracies = " ".join(f"{a:.4f}" for a in result["test_accuracy_per_epoch"])
        print(f"{label:14}{shown:>22}{result['training_seconds']:>12.1f}"
              f"{result['samples_per_second']:>11.0f}   {accuracies}")
    ddp, filo = sides[0][1], sides[1][1]
    ratio = {"samples_per_second": filo["samples_per_second"] / ddp["samples_per_second"],
             "training_seconds": filo["training_seconds"] / ddp["training_seconds"],
             "time_to_target": None}
    if ddp["time_to_target_seconds"] and filo["time_to_target_seconds"]:
        ratio["time_to_target"] = filo["time_to_target_seconds"] / ddp["time_to_target_seconds"]
    shown = "n/a (not reached)" if ratio["time_to_target"] is None else f"{ratio['time_to_target']:.2f}"
    print(f"{'filo ÷ DDP':14}{shown:>22}{ratio['training_seconds']:>12.2f}{ratio['samples_per_second']:>11.2f}")
    shares = [node["samples"] for node in filo.get("trainers") or []]
    if shares:
        print("filo's trainers trained " + " / ".join(f"{share / sum(shares):.0%}" for share in shares) +
              " of the samples; DDP's ranks a third each")
    print("other processes' CPU while each side ran: " + ", ".join(
        f"{label} {result['other_cpu_seconds']:.0f} cpu-s ({result['other_cpu_fraction']:.0%} of the machine)"
        for label, result in sides))
    if any(result["other_cpu_fraction"] > NOISY_FRACTION for _, result in sides):
        print(f"WARNING: other work took more than {NOISY_FRACTION:.0%} of the machine during a run: "
              "these figures measure the machine's load as much as the trainers")
    return ratio


def parse_scenario(text):
    if text == "equal":
        return [1.0] * RANKS
    factors = [float(part) for part in text.split(":")]
    if len(factors) != RANKS or any(f < 1 for f in factors):
        raise SystemExit(f"versus_ddp: scenario '{text}' is not 'equal' or {RANKS} factors ≥ 1 like 1:2:4")
    return factors


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--filo", default="build/filo", help="the filo binary")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--scenarios", default="equal,1:2:4", help="comma-separated: equal, or a:b:c slowdowns")
    parser.add_argument("--cpus", default="0/1/1",
                        help="pin rank / node i to the i-th CPU list; 'none': unpinned")
    parser.add_argument("--coordinator-cpus", default="", help="filo's coordinator (default: the last list)")
    parser.add_argument("--out", default="/tmp/filo-versus-ddp", help="model, logs, runs and the JSON result")
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist", help="idx Fashion-MNIST")
    parser.add_argument("--train-limit", type=int, default=0, help="first N training samples (0: all 60000)")
    parser.add_argument("--test-limit", type=int, default=0, help="first N test samples (0: all 10000)")
    parser.add_argument("--batch", type=int, default=126, help="global batch (filo's schedule.round_samples)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate")
    parser.add_argument("--seed", type=int, default=1, help="initial weights and the epoch order")
    parser.add_argument("--min-accuracy", type=float, default=0.0,
                        help="exit 3 if a side ends below it or trains fewer samples than it should (tests)")
    # A DDP rank (started by the driver).
    parser.add_argument("--rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--slowdown", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--rank-cpus", default="", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.rank is not None:
        return run_rank(arguments)
    if arguments.batch % RANKS:
        raise SystemExit(f"versus_ddp: --batch {arguments.batch} does not split evenly in {RANKS} ranks")

    if not os.access(arguments.filo, os.X_OK):
        raise SystemExit(f"versus_ddp: {arguments.filo} is not an executable filo; build it (tools/setup.sh --tests) "
                         "or name it with --filo")
    check_epoch_order()
    cpu_lists = None if arguments.cpus == "none" else arguments.cpus.split("/")
    if cpu_lists is not None and len(cpu_lists) != RANKS:
        raise SystemExit(f"versus_ddp: --cpus needs {RANKS} lists like 0/1/1, or none")
    coordinator_cpus = arguments.coordinator_cpus or (cpu_lists[-1] if cpu_lists else "")
    pinning = ("unpinned" if not cpu_lists else
               f"rank / node i on CPUs {'/'.join(cpu_lists)}, filo's coordinator on {coordinator_cpus}")
    scenarios = [(name, parse_scenario(name)) for name in arguments.scenarios.split(",")]
    arguments.out = os.path.abspath(arguments.out)
    os.makedirs(arguments.out, exist_ok=True)

    import torch

    torch.manual_seed(arguments.seed)
    model = model_class()()
    parameters = sum(p.numel() for p in model.parameters())
    torch.save(model.state_dict(), f"{arguments.out}/initial_state.pt")  # DDP's start
    torch.jit.script(model).save(f"{arguments.out}/model.pt")  # filo's start: the same weights
    samples = arguments.train_limit or 60000
    print(f"versus_ddp: {model.__class__.__name__}, {parameters} parameters; Fashion-MNIST, {samples} "
          f"training samples, {arguments.epochs} epochs, global batch {arguments.batch} "
          f"({arguments.batch // RANKS} per DDP rank), Adam lr {arguments.lr:g}, {RANKS} trainers of 1 thread; "
          f"{pinning}; {os.cpu_count()} CPUs here", flush=True)

    results = {"parameters": parameters, "epochs": arguments.epochs, "batch": arguments.batch,
               "learning_rate": arguments.lr, "train_samples": samples, "cpus": arguments.cpus,
               "coordinator_cpus": coordinator_cpus, "target_accuracy": TARGET_ACCURACY,
               "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "torch": torch.__version__, "scenarios": {}}
    failures = []
    for name, slowdowns in scenarios:
        print(f"\n[{name}] PyTorch DDP ...", flush=True)
        ddp = run_ddp(arguments, name, slowdowns, cpu_lists)
        print(f"[{name}] filo ...", flush=True)
        filo = run_filo(arguments, name, slowdowns, cpu_lists, coordinator_cpus)
        for result in (ddp, filo):
            add_figures(result)
        ratio = print_scenario(name, slowdowns, pinning, [("PyTorch DDP", ddp), ("filo", filo)])
        results["scenarios"][name] = {"slowdowns": slowdowns, "ddp": ddp, "filo": filo, "filo_over_ddp": ratio}
        for label, result in (("DDP", ddp), ("filo", filo)):
            if arguments.min_accuracy > 0 and (result["test_accuracy_per_epoch"][-1] < arguments.min_accuracy or
                                               any(s != samples for s in result["samples_per_epoch"])):
                failures.append(f"{name}: {label} ended at {result['test_accuracy_per_epoch'][-1]:.4f} "
                                f"with samples per epoch {result['samples_per_epoch']}")
        sys.stdout.flush()
    with open(f"{arguments.out}/versus_ddp.json", "w") as file:
        json.dump(results, file, indent=1)
    print(f"\ntime to {TARGET_ACCURACY}: training seconds at the end of the first epoch at or above it; "
          f"samples/s: samples trained ÷ training seconds\nresult: {arguments.out}/versus_ddp.json")
    if failures:
        print("FAILED: " + "; ".join(failures))
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
