"""CPU inference speed: plain PyTorch eager, a plain ONNX Runtime session, and our serving path.

All three run in the same process on the same images, the zero-shot EfficientNet-Lite0 card
for the dataset's folder names, exported once here with export_onnx (which checks it against
PyTorch first):

  (a) torch eager: the network Predictor runs (backbone + zero-shot head), inference mode,
      with --threads and with 1 thread (on a busy 2-core machine torch's thread pool waiting
      for a descheduled thread can make 2 threads several times slower than 1); the ratio
      is taken against the faster of the two, and the end-to-end torch row uses that one;
  (b) plain ORT: onnxruntime.InferenceSession(graph) with default SessionOptions;
  (c) ours: OrtPredictor on the same graph (its session settings; see classifier/ml/ort.py).

The model table feeds all three the same already-preprocessed tensors (c includes building
its PredictionResults, so it is if anything handicapped). The end-to-end table starts from
decoded PIL images and includes preprocessing: Predictor.predict (torchvision transform)
against OrtPredictor.predict (its own bit-identical numpy preprocessing).

Each cell of a table is timed in short slices taken in turn with the table's other cells,
so load from other processes on the machine falls on all of them alike; throughput is
images over the total time of the calls, latency is per call (per batch at batch 32).

    python -m benchmarks.inference --data ../shared/datasets/caltech101-animals

The last line printed is JSON: ratio_vs_plain_ort (ours / plain ORT images/s at batch 1),
ratio_vs_torch_eager, every figure, the threads and the CPU.
"""

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime
import torch

from classifier.ml.datasets import class_names, image_folder
from classifier.ml.export import ServingNetwork, export_onnx
from classifier.ml.images import decode_image
from classifier.ml.ort import INPUT_NAME, OrtPredictor, default_threads
from classifier.ml.predict import ModelCard, Predictor
from classifier.ml.zero_shot import default_mapping

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "caltech101-animals"
SLICE_S = 0.5  # how long a cell runs before the next one takes its turn


@dataclass
class Cell:
    table: str
    system: str
    batch_size: int
    call: Callable[[int], object]  # runs the i-th batch
    torch_threads: int | None = None  # set before each slice of a torch cell
    times: list[float] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return self.batch_size * len(self.times) / sum(self.times)

    def latency_ms(self, q: float) -> float:
        return float(np.percentile(self.times, q) * 1000.0)

    def row(self) -> dict:
        return {"images_per_s": round(self.images_per_s, 2), "p50_ms": round(self.latency_ms(50), 2),
                "p95_ms": round(self.latency_ms(95), 2), "calls": len(self.times)}


def measure(cells: list[Cell], seconds: float) -> None:
    """Runs every cell for about `seconds` of call time, in interleaved slices."""
    for cell in cells:
        set_threads(cell)
        cell.call(0)  # warm-up: the first run allocates, and torch picks its kernels
    while any(sum(c.times) < seconds for c in cells):
        for cell in cells:
            if sum(cell.times) >= seconds:
                continue
            set_threads(cell)
            slice_end = time.perf_counter() + SLICE_S
            while True:
                started = time.perf_counter()
                cell.call(len(cell.times))
                now = time.perf_counter()
                cell.times.append(now - started)
                if now >= slice_end:
                    break


def set_threads(cell: Cell) -> None:
    if cell.torch_threads is not None and torch.get_num_threads() != cell.torch_threads:
        torch.set_num_threads(cell.torch_threads)


def batches(n_images: int, batch_size: int) -> list[np.ndarray]:
    """Index arrays covering all images (wrapping round to fill the last batch)."""
    count = max(1, -(-n_images // batch_size))
    return [np.arange(k * batch_size, (k + 1) * batch_size) % n_images for k in range(count)]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ImageFolder root (class = folder name)")
    parser.add_argument("--images", type=int, default=64, help="images taken evenly across the dataset")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="call time per cell (12 cells; a slow call may overshoot it)")
    parser.add_argument("--threads", type=int, default=default_threads(),
                        help="torch threads and OrtPredictor intra-op threads (plain ORT keeps its default)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    if args.images < 1 or args.seconds <= 0 or args.threads < 1:
        parser.error("--images, --seconds and --threads must be positive")
    return args


def systems(args) -> dict:
    """The photos, the zero-shot card, and the three systems that run it."""
    items = image_folder(args.data)
    items = items[:: max(1, len(items) // args.images)][: args.images]
    images = [decode_image(item.path.read_bytes()).image for item in items]
    torch.set_num_threads(args.threads)

    card = ModelCard.zero_shot(backbone="efficientnet_lite0", class_map=default_mapping(class_names(items)))
    predictor = Predictor(card)
    tensors = card.preprocessing.batch(images)
    with tempfile.TemporaryDirectory() as tmp:
        report = export_onnx(predictor, Path(tmp) / "model.onnx", check_images=images[:4])
        plain = onnxruntime.InferenceSession(report.path, providers=["CPUExecutionProvider"])  # default options
        ours = OrtPredictor(card, report.path, threads=args.threads)
    return {"images": images, "predictor": predictor, "network": ServingNetwork(predictor).eval(),
            "tensors": tensors, "arrays": tensors.numpy(), "export": report, "plain": plain, "ours": ours}


def model_cells(args, s: dict) -> list[Cell]:
    """The model table: the same preprocessed tensors through each system."""
    network, tensors, arrays, n_images = s["network"], s["tensors"], s["arrays"], len(s["images"])
    plain, ours = s["plain"], s["ours"]

    def torch_eager(rows):
        with torch.inference_mode():
            return network(tensors[rows])

    cells = []
    for bs in (1, args.batch_size):
        index = batches(n_images, bs)
        inputs = [np.ascontiguousarray(arrays[rows]) for rows in index]
        cells += [Cell("model", f"torch eager, {n} thread{'s' * (n > 1)}", bs,
                       lambda i, ix=index: torch_eager(ix[i % len(ix)]), torch_threads=n)
                  for n in sorted({1, args.threads})]
        cells += [
            Cell("model", "plain onnxruntime", bs, lambda i, x=inputs: plain.run(None, {INPUT_NAME: x[i % len(x)]})),
            Cell("model", "ours (OrtPredictor)", bs, lambda i, x=inputs: ours.predict_preprocessed(x[i % len(x)])),
        ]
    return cells


def find(cells: list[Cell], system: str, bs: int) -> Cell:
    return next(c for c in cells if c.system.startswith(system) and c.batch_size == bs)


def fastest_torch(cells: list[Cell], bs: int) -> Cell:
    return max((c for c in cells if c.system.startswith("torch") and c.batch_size == bs), key=lambda c: c.images_per_s)


def end_to_end_cells(args, s: dict, model: list[Cell]) -> list[Cell]:
    """The end-to-end table: decoded photos, preprocessing included; torch with its faster thread count."""
    images, predictor, ours = s["images"], s["predictor"], s["ours"]
    cells = []
    for bs in (1, args.batch_size):
        n = fastest_torch(model, bs).torch_threads
        pictures = [[images[i] for i in rows] for rows in batches(len(images), bs)]
        cells += [
            Cell("end to end", f"torch Predictor.predict, {n}t", bs,
                 lambda i, p=pictures: predictor.predict(p[i % len(p)]), torch_threads=n),
            Cell("end to end", "ours OrtPredictor.predict", bs, lambda i, p=pictures: ours.predict(p[i % len(p)])),
        ]
    return cells


def print_tables(model: list[Cell], end_to_end: list[Cell]) -> None:
    for cells, title in ((model, "model only: the same preprocessed tensors"),
                         (end_to_end, "end to end: decoded PIL images, preprocessing included")):
        print(f"\n{title}")
        print(f"{'system':<30} {'batch':>5} {'images/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'calls':>6}")
        for c in cells:
            print(f"{c.system:<30} {c.batch_size:>5} {c.images_per_s:>9.1f} {c.latency_ms(50):>8.2f} "
                  f"{c.latency_ms(95):>8.2f} {len(c.times):>6}")


def ratio(a: Cell, b: Cell) -> float:
    return round(a.images_per_s / b.images_per_s, 3)


def summary(args, s: dict, model: list[Cell], end_to_end: list[Cell], load_before, load_after) -> dict:
    big = args.batch_size
    return {
        "ratio_vs_plain_ort": ratio(find(model, "ours", 1), find(model, "plain", 1)),
        "ratio_vs_torch_eager": ratio(find(model, "ours", 1), fastest_torch(model, 1)),
        f"ratio_vs_plain_ort_batch{big}": ratio(find(model, "ours", big), find(model, "plain", big)),
        f"ratio_vs_torch_eager_batch{big}": ratio(find(model, "ours", big), fastest_torch(model, big)),
        "end_to_end_ratio_vs_torch": ratio(find(end_to_end, "ours", 1), find(end_to_end, "torch", 1)),
        f"end_to_end_ratio_vs_torch_batch{big}": ratio(find(end_to_end, "ours", big), find(end_to_end, "torch", big)),
        "figures": {f"{c.table} | {c.system} | batch {c.batch_size}": c.row() for c in model + end_to_end},
        "threads": args.threads,
        "plain_ort_threads": "onnxruntime default (physical cores)",
        "cpu": cpu_name(),
        "cpus": os.cpu_count(),
        "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "images": len(s["images"]),
        "seconds_per_cell": args.seconds,
        "export": {k: s["export"].to_dict()[k] for k in ("max_abs_diff_probabilities", "max_abs_diff_embedding",
                                                          "opset", "seconds")},
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    s = systems(args)
    load_before = os.getloadavg()
    model = model_cells(args, s)
    measure(model, args.seconds)
    end_to_end = end_to_end_cells(args, s, model)
    measure(end_to_end, args.seconds)
    load_after = os.getloadavg()
    print_tables(model, end_to_end)
    result = summary(args, s, model, end_to_end, load_before, load_after)
    print(f"\nours / plain ORT at batch 1: {result['ratio_vs_plain_ort']}x; "
          f"ours / torch eager at batch 1: {result['ratio_vs_torch_eager']}x "
          f"(load average {result['load_average_before_after']})")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
