"""Seconds per training epoch: this project's DML loop on SystemDS against the same
LeNet-5 in PyTorch (CPU, float32 and float64), on the same machine, in the same run.

Not a test. For every batch size it runs, interleaved and repeated: the DML loop
(train.dml, each optimizer, --parallel-batches micro-batches) for --epochs epochs in
one SystemDS process, and PyTorch for the same epochs. It reports per batch size and
system: seconds per epoch of the training loop (median/min/max over the epochs after
the first of every repetition), images/s, the ratio DML/PyTorch float32, and for DML
the time outside the training loop (JVM start, data read, compilation, per-epoch test
evaluation, final evaluation) as a share of a 1-epoch and of a 10-epoch run; plus the
peak RSS of the JVM at the largest batch size. The table goes to stdout and to
results/bench/epoch_time.md together with a description of the machine.

  pip install -e ".[bench]"           # torch==2.13.0, the CPU build
  python benchmarks/epoch_time.py     # the full table (about 2 h on 2 cores)
  python benchmarks/epoch_time.py --train-size 2000 --batch-sizes 64 512 --reps 2 --epochs 2
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lars_systemml import data, runtime  # noqa: E402
from lars_systemml.config import TrainConfig  # noqa: E402
from lars_systemml.train import RunOptions, train  # noqa: E402

BATCH_SIZES = [64, 512, 4096, 16384, 32000]


@dataclass
class Result:
    """All repetitions of one (system, optimizer, batch size)."""

    system: str
    optimizer: str
    batch_size: int
    epoch_seconds: list[float] = field(default_factory=list)  # training loop only, epochs >= 2
    first_epoch_seconds: list[float] = field(default_factory=list)
    outside_seconds: list[float] = field(default_factory=list)  # JVM, read, compile, final eval (per run)
    eval_seconds: list[float] = field(default_factory=list)  # per-epoch test evaluation
    wall_seconds: list[float] = field(default_factory=list)
    peak_rss: list[int] = field(default_factory=list)  # bytes


# --------------------------------------------------------------------------- DML


class _ChildRSS:
    """Polls the peak RSS (VmHWM) of this process's java children while a run lasts."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self):
        me = str(os.getpid())
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    stat = Path(f"/proc/{pid}/stat").read_text()
                    if stat.rsplit(")", 1)[1].split()[1] != me:
                        continue
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            self.peak = max(self.peak, int(line.split()[1]) * 1024)
                except (OSError, IndexError, ValueError):
                    continue
            self._stop.wait(0.5)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_dml(args, optimizer: str, batch_size: int, result: Result, workdir: Path, java: bool) -> None:
    config = TrainConfig(optimizer=optimizer, batch_size=batch_size, epochs=args.epochs,
                         lr=args.lr[optimizer], parallel_batches=args.parallel_batches,
                         train_size=args.train_size, test_size=args.test_size, seed=args.seed)
    options = RunOptions(data_dir=args.data_dir, heap=args.heap, progress=False,
                         systemds_config={"sysds.native.blas": "none"} if java else {})
    t0 = time.time()
    with _ChildRSS() as rss:
        m = train(config, workdir / f"dml-{optimizer}-{batch_size}", options)
    wall = time.time() - t0
    loops = [h["loop_seconds"] for h in m["history"]]
    evals = [h["eval_seconds"] for h in m["history"]]
    result.first_epoch_seconds.append(loops[0])
    result.epoch_seconds.extend(loops[1:] or loops)
    result.eval_seconds.extend(evals)
    result.outside_seconds.append(wall - sum(loops) - sum(evals))
    result.wall_seconds.append(wall)
    result.peak_rss.append(rss.peak)


# --------------------------------------------------------------------------- PyTorch


def torch_model(torch, dtype):
    nn = torch.nn
    model = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(784, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
    return model.to(dtype)


def torch_step(torch, params, state, optimizer, lr, mu, lam, trust):
    """The DML optimizers: momentum with L2 decay; LARS on weights, plain momentum on biases."""
    with torch.no_grad():
        for p in params:
            g = p.grad
            is_bias = p.dim() == 1
            if optimizer == "lars" and not is_bias:
                w_norm, g_norm = p.norm(), g.norm()
                local = trust * w_norm / (g_norm + lam * w_norm) if w_norm > 0 and g_norm > 0 else 1.0
                step = (lr * local) * (g + lam * p)
            else:
                step = lr * (g if is_bias else g + lam * p)
            v = state.setdefault(p, torch.zeros_like(p))
            v.mul_(mu).add_(step)
            p.sub_(v)


def run_torch(args, optimizer: str, batch_size: int, dtype_name: str, result: Result, xy) -> None:
    import torch

    dtype = getattr(torch, dtype_name)
    torch.manual_seed(args.seed)
    x_all = torch.from_numpy(xy[0]).to(dtype).reshape(-1, 1, 28, 28)
    y_all = torch.from_numpy(xy[1])
    n = x_all.shape[0]
    model = torch_model(torch, dtype)
    params = list(model.parameters())
    state: dict = {}
    loss_fn = torch.nn.CrossEntropyLoss()
    lr = args.lr[optimizer]
    t_start = time.time()
    for epoch in range(args.epochs):
        t0 = time.time()
        perm = torch.randperm(n)
        for beg in range(0, n, batch_size):
            idx = perm[beg:beg + batch_size]
            model.zero_grad(set_to_none=True)
            loss = loss_fn(model(x_all[idx]), y_all[idx])
            loss.backward()
            torch_step(torch, params, state, optimizer, lr, 0.9, 1e-4, 0.001)
        seconds = time.time() - t0
        (result.first_epoch_seconds if epoch == 0 else result.epoch_seconds).append(seconds)
    if args.epochs == 1:
        result.epoch_seconds.extend(result.first_epoch_seconds[-1:])
    result.wall_seconds.append(time.time() - t_start)


# --------------------------------------------------------------------------- report


def machine_description() -> list[str]:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    java = subprocess.run([runtime.java_executable(), "-version"], capture_output=True, text=True).stderr
    lines = [f"- machine: {cpu}, {os.cpu_count()} cores{mem}, {platform.platform()}",
             f"- Java: {java.splitlines()[0] if java else 'unknown'}; SystemDS {runtime.systemds_version()}; "
             f"native BLAS: {runtime.find_openblas() or 'none (Java kernels)'}"]
    try:
        import torch

        lines.append(f"- PyTorch {torch.__version__}, {torch.get_num_threads()} threads")
    except ImportError:
        lines.append("- PyTorch not installed (pip install -e '.[bench]')")
    return lines


def table(results: dict, args) -> list[str]:
    head = ("| batch | system | optimizer | s/epoch median | min | max | images/s | ÷ torch f32 "
            "| outside loop, 1-epoch run | outside loop, 10-epoch run | same, --eval-every 10 |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    n = args.images
    for b in args.batch_sizes:
        for opt in args.optimizers:
            ref = results.get(("torch-float32", opt, b))
            ref_med = statistics.median(ref.epoch_seconds) if ref and ref.epoch_seconds else None
            for system in args.systems:
                r = results.get((system, opt, b))
                if not r or not r.epoch_seconds:
                    continue
                med = statistics.median(r.epoch_seconds)
                ratio = f"{med / ref_med:.2f}" if ref_med and system != "torch-float32" else ""
                share1 = share10 = share10_last = ""
                if system.startswith("dml") and r.outside_seconds:
                    fixed = statistics.median(r.outside_seconds)
                    ev = statistics.median(r.eval_seconds) if r.eval_seconds else 0.0
                    first = statistics.median(r.first_epoch_seconds) if r.first_epoch_seconds else med
                    share1 = f"{(fixed + ev) / (fixed + ev + first):.0%} ({fixed + ev:.1f} s)"
                    total10 = fixed + 10 * ev + first + 9 * med
                    share10 = f"{(fixed + 10 * ev) / total10:.1%}"
                    # test set evaluated after the last epoch only
                    share10_last = f"{(fixed + ev) / (total10 - 9 * ev):.1%}"
                lines.append(f"| {b} | {system} | {opt} | {med:.2f} | {min(r.epoch_seconds):.2f} | "
                             f"{max(r.epoch_seconds):.2f} | {n / med:,.0f} | {ratio} | {share1} | {share10} | {share10_last} |")
    return lines



def emit_report(text: str, output: str | Path | None) -> None:
    """Print a benchmark's markdown report and, if ``output`` is given, write it there
    (its folder made first). Shared by the benchmarks in this folder."""
    print(text)
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text)

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=BATCH_SIZES)
    p.add_argument("--optimizers", nargs="+", default=["sgd", "lars"], choices=["sgd", "lars"])
    p.add_argument("--systems", nargs="+", default=["dml", "torch-float32", "torch-float64"],
                   choices=["dml", "dml-java", "torch-float32", "torch-float64"],
                   help="dml: with native BLAS if OpenBLAS is installed; dml-java: SystemDS's Java kernels")
    p.add_argument("--reps", type=int, default=3, help="repetitions of every run (interleaved)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is reported apart")
    p.add_argument("--parallel-batches", type=int, default=4)
    p.add_argument("--train-size", type=int, default=None, help="training subset (default: all 60,000)")
    p.add_argument("--test-size", type=int, default=None, help="test subset (default: all 10,000)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--heap", default="8g")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--output", default=str(REPO / "results" / "bench" / "epoch_time.md"))
    args = p.parse_args(argv)
    args.lr = {"sgd": 0.01, "lars": 1.0}

    prepared = data.prepare("mnist", args.data_dir, args.train_size, args.test_size)
    args.images = prepared.train_size
    xy = None
    if any(s.startswith("torch") for s in args.systems):
        try:
            import torch  # noqa: F401
        except ImportError:
            p.error("PyTorch is missing: pip install -e '.[bench]' (or --systems dml)")
        train_split = data.load_split(data.resolve_data_dir("mnist", args.data_dir), "train")
        rows = data.subset_indices(train_split.labels, args.train_size, "stratified")
        x, y = data.to_matrices(data.Split(train_split.images[rows], train_split.labels[rows]))
        xy = (x, train_split.labels[rows].astype(np.int64))

    started = time.strftime("%Y-%m-%d %H:%M:%S")
    load_start = os.getloadavg()
    results: dict = {}
    runs = [(b, system, opt) for b in args.batch_sizes for opt in args.optimizers for system in args.systems]
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"epoch-time-{os.getpid()}"
    for rep in range(args.reps):
        order = runs if rep % 2 == 0 else runs[::-1]  # interleaved, alternating direction
        for b, system, opt in order:
            r = results.setdefault((system, opt, b), Result(system, opt, b))
            t0 = time.time()
            if system.startswith("dml"):
                run_dml(args, opt, b, r, workdir, java=system == "dml-java")
            else:
                run_torch(args, opt, b, system.split("-")[1], r, xy)
            print(f"rep {rep + 1}/{args.reps} batch {b} {system} {opt}: {time.time() - t0:.1f} s wall, "
                  f"epochs {[round(s, 2) for s in r.epoch_seconds[-(args.epochs - 1 or 1):]]}",
                  file=sys.stderr, flush=True)

    lines = [f"# Seconds per training epoch: DML on SystemDS vs PyTorch CPU", "",
             f"Run {started} .. {time.strftime('%H:%M:%S')}: `python benchmarks/epoch_time.py "
             f"{' '.join(sys.argv[1:] if argv is None else argv)}`", ""]
    lines += machine_description()
    lines += [f"- load average at start {load_start[0]:.1f}, at end {os.getloadavg()[0]:.1f} "
              f"(a busy machine inflates every number)",
              f"- {args.images} training images, {args.epochs} epochs per run, {args.reps} repetitions "
              f"interleaved; DML: {args.parallel_batches} parallel batches, heap {args.heap}; "
              f"lr sgd {args.lr['sgd']}, lars {args.lr['lars']}", ""]
    lines += ["s/epoch: the training loop only (shuffle, forward, backward, update), epochs 2.. of "
              "every run. ÷ torch f32: s/epoch divided by PyTorch float32's at the same batch size and "
              "optimizer. Outside loop: JVM start, data read, compilation, per-epoch test and "
              "final train-set evaluation, as a share of a whole 1-epoch and 10-epoch run "
              "(extrapolated from the measured parts); --eval-every 10: the 10-epoch run with the "
              "test set evaluated after the last epoch only.", ""]
    lines += table(results, args)
    dml = [s for s in args.systems if s.startswith("dml")]
    peak = results.get((dml[0], args.optimizers[0], max(args.batch_sizes))) if dml else None
    if peak and peak.peak_rss:
        lines += ["", f"Peak RSS of the SystemDS JVM at batch {max(args.batch_sizes)}: "
                      f"{max(peak.peak_rss) / 2**30:.2f} GiB (heap -Xmx{args.heap})."]
    emit_report("\n".join(lines) + "\n", args.output)
    print(f"written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
