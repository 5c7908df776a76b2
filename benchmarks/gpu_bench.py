"""GPU benchmark (benchmark 7): Swin-L/384 training and inference throughput, MFU, latency and Grad-CAM cost.

Run on a CUDA machine from the repo root: `python -m benchmarks.gpu_bench` (about 5 minutes; `--quick` for a
short check). Synthetic tensors only, no dataset. The model is the product's: `fracture.model.core.build_model` with the
production params (configs/production.yaml: timm swin_large_patch4_window12_384, 1 channel, the seed's head),
`pretrained` off. Training steps are the product's `fracture.train.epoch.train_one_epoch` (bf16 autocast from
`setup_runtime`, fused AdamW from `make_optimisation`, gradient clipping), eager and under `torch.compile` as
`fracture.train` wraps it, with timm's fused attention (scaled_dot_product_attention) on and off. Swin's window
attention is "experimental" in timm 1.0, i.e. OFF unless enabled (TIMM_FUSED_ATTN=2 or set per module, as here).

Every figure is printed as one JSON line as soon as it is measured (so a killed run keeps what it had):
  train: images/s and MFU (= images/s x 624.5e9 / peak dense bf16 FLOP/s) at batch 32 and 64;
  infer: images/s at batch 256 (bf16 autocast, as validation runs) and the product's `predict_proba` (as
         evaluate runs it); latency: batch-1 p50/p90 ms; gradcam: seconds per image at batch 8 and 32
         (`fracture.explain.gradcam`).
The last line is a summary with the target: >= 35 % MFU with compile on an H100. Compile warm-up is timed
separately and never counted in throughput. A time budget (default 285 s) skips the figures that no longer fit.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

TRAIN_FLOP_PER_IMAGE = 624.5e9  # Swin-L/384 forward + backward
INFER_FLOP_PER_IMAGE = TRAIN_FLOP_PER_IMAGE / 3  # forward only
MFU_TARGET = 0.35
IMAGE_SIZE = 384
# Dense (no sparsity) bf16 tensor-core peaks, FLOP/s, matched against torch.cuda.get_device_name().
PEAK_BF16 = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("A10G", 70e12),
    ("L4", 121e12),
)


# ---------------------------------------------------------------------------------------------- pure helpers
def peak_flops(device_name: str, override_tflops: float | None = None) -> float | None:
    """Dense bf16 peak FLOP/s of a GPU from its name (first match in PEAK_BF16), or the override in TFLOP/s."""
    if override_tflops:
        return override_tflops * 1e12
    for key, peak in PEAK_BF16:
        if key.lower() in device_name.lower():
            return peak
    return None


def mfu(images_per_s: float, peak: float | None, flop_per_image: float = TRAIN_FLOP_PER_IMAGE) -> float | None:
    """Model FLOP utilisation: achieved model FLOP/s over the peak (None when the peak is unknown)."""
    if not peak or peak <= 0:
        return None
    return images_per_s * flop_per_image / peak


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of values, nearest-rank."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


def figure_line(figure: str, **fields: Any) -> str:
    """One JSON line for one figure (floats rounded to 4 significant digits)."""
    out = {"figure": figure}
    for key, value in fields.items():
        out[key] = float(f"{value:.4g}") if isinstance(value, float) else value
    return json.dumps(out, sort_keys=False)


def emit(figure: str, **fields: Any) -> dict[str, Any]:
    """Print a figure line now (flushed) and return it as a dict."""
    line = figure_line(figure, **fields)
    print(line, flush=True)
    return json.loads(line)


class Budget:
    """Wall-clock budget: figures that would not finish in the time left are skipped (and said so)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.perf_counter) -> None:
        """Start the budget now."""
        self.clock, self.deadline = clock, clock() + seconds

    def left(self) -> float:
        """Seconds left."""
        return self.deadline - self.clock()

    def allows(self, seconds: float) -> bool:
        """Whether a step estimated at `seconds` fits in what is left."""
        return self.left() >= seconds


class BudgetExceeded(Exception):
    """Raised by the watchdog when the whole run overruns its budget."""


@contextmanager
def watchdog(seconds: float) -> Iterator[None]:
    """Raise BudgetExceeded in the main thread after `seconds` (SIGALRM; a no-op where there is none)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def fire(signum: int, frame: Any) -> None:
        raise BudgetExceeded

    previous = signal.signal(signal.SIGALRM, fire)
    signal.alarm(max(1, int(seconds)))
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# ----------------------------------------------------------------------------------------------- measurement
def sync(device: Any) -> None:
    """Wait for queued GPU work (no-op on CPU)."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize()


def production_params(backbone: dict[str, Any] | None = None, image_size: int = IMAGE_SIZE) -> Any:
    """configs/production.yaml, pretrained off (no download), bf16, no loader workers; optionally another backbone.

    `backbone` is {"name": timm name, "kwargs": backbone_kwargs} (used by the CPU smoke test with a tiny Swin).
    """
    from pathlib import Path

    import yaml

    from fracture.config import parse_params

    repo = Path(__file__).resolve().parents[1]
    data = yaml.safe_load((repo / "configs" / "production.yaml").read_text())
    data["model"].update(pretrained=False, weights_path=None)
    if backbone:
        data["model"].update(backbone=backbone["name"], backbone_kwargs=backbone.get("kwargs", {}))
    data["base"]["image_size"] = image_size
    data["train"].update(amp="bf16", num_workers=0, compile=False)
    data["train"]["effective_batch_size"] = data["train"]["batch_size"]
    return parse_params(data, "gpu-bench-params")


def set_fused_attn(model: Any, enabled: bool) -> int:
    """Switch timm's fused attention on every attention module that has the switch; returns how many."""
    count = 0
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = enabled
            count += 1
    return count


def synthetic_batches(n: int, batch: int, size: int, device: Any) -> list[tuple[Any, Any]]:
    """`n` references to one random batch on the device (normalised images, 0/1 labels)."""
    import torch

    x = torch.randn(batch, 1, size, size, device=device)
    y = (torch.rand(batch, device=device) < 0.45).float()
    return [(x, y)] * n


def time_train(net: Any, opt: Any, rt: Any, tp: Any, batch: int, size: int, steps: int, warmup: int) -> dict:
    """Warm-up epoch (compile happens here) then a timed epoch of the product's `train_one_epoch`."""
    from fracture.train.epoch import train_one_epoch

    start = time.perf_counter()
    train_one_epoch(net, synthetic_batches(warmup, batch, size, rt.device), opt, rt, tp)
    sync(rt.device)
    warmup_s = time.perf_counter() - start
    batches = synthetic_batches(steps, batch, size, rt.device)
    start = time.perf_counter()
    train_one_epoch(net, batches, opt, rt, tp)  # returns the loss with .item(): synchronised
    sync(rt.device)
    seconds = time.perf_counter() - start
    return {"images_per_s": steps * batch / seconds, "step_ms": 1000 * seconds / steps, "warmup_s": warmup_s}


def time_inference(model: Any, rt: Any, batch: int, size: int, iters: int, warmup: int) -> dict:
    """Forward passes under inference_mode and the runtime's autocast (as `fracture.train.epoch.score_val` does)."""
    import torch

    from fracture.train.runtime import autocast

    model.eval()
    x = torch.randn(batch, 1, size, size, device=rt.device)
    times = []
    with torch.inference_mode(), autocast(rt):
        for i in range(warmup + iters):
            start = time.perf_counter()
            model(x).float()
            sync(rt.device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    total = sum(times)
    return {
        "images_per_s": batch * iters / total,
        "p50_ms": 1000 * percentile(times, 50),
        "p90_ms": 1000 * percentile(times, 90),
    }


def time_predict_proba(model: Any, rt: Any, n: int, size: int, batch: int, mean: float, std: float) -> dict:
    """The product's `predict_proba` (uint8 host arrays in, probabilities out), as evaluate scores the test set."""
    import numpy as np

    from fracture.model.core import predict_proba

    images = np.random.default_rng(0).integers(0, 256, size=(n, size, size), dtype=np.uint8)
    predict_proba(model, images[:batch], mean, std, batch, rt.device)  # warm-up
    start = time.perf_counter()
    predict_proba(model, images, mean, std, batch, rt.device)
    seconds = time.perf_counter() - start
    return {"images_per_s": n / seconds}


def time_gradcam(model: Any, n: int, size: int, batch: int, mean: float, std: float) -> dict:
    """Seconds per image of the product's Grad-CAM (`fracture.explain.gradcam`), after one warm-up batch."""
    import numpy as np

    from fracture.explain import gradcam

    model.eval()
    images = np.random.default_rng(1).integers(0, 256, size=(n, size, size), dtype=np.uint8)
    gradcam(model, images[:batch], mean, std, batch)
    device = next(model.parameters()).device
    sync(device)
    start = time.perf_counter()
    maps = gradcam(model, images, mean, std, batch)
    sync(device)
    seconds = time.perf_counter() - start
    return {"s_per_image": seconds / n, "maps": list(maps.shape)}


# ------------------------------------------------------------------------------------------------------ runs
class Bench:
    """One model on one device, its optimisation, and the figures measured so far."""

    def __init__(self, params: Any, device: Any, peak: float | None, budget: Budget, sizes: dict) -> None:
        """Build the product model and optimisation on `device`."""
        import torch

        from fracture.model.core import build_model
        from fracture.train.optim import make_optimisation
        from fracture.train.runtime import Runtime, resolve_amp

        self.params, self.peak, self.budget, self.sizes = params, peak, budget, sizes
        self.size = params.base.image_size
        amp_dtype, scaler = resolve_amp(params.train.amp, device)
        self.rt = Runtime(device, amp_dtype=amp_dtype, use_scaler=scaler)
        torch.manual_seed(0)
        self.model = build_model(params.model, params.base.image_size).to(device)
        self.opt = make_optimisation(self.model, params.train, self.rt, steps_per_epoch=100_000, pw=1.5)
        self.results: list[dict[str, Any]] = []

    def guarded(self, figure: str, estimate_s: float, fn: Callable[[], dict], **labels: Any) -> None:
        """Measure one figure unless the budget is short; an OOM or error becomes the figure's `error`."""
        import torch

        if not self.budget.allows(estimate_s):
            self.results.append(emit(figure, **labels, skipped=f"time budget ({self.budget.left():.0f} s left)"))
            return
        try:
            values = fn()
        except torch.cuda.OutOfMemoryError:
            values = {"error": "CUDA out of memory"}
        except RuntimeError as err:
            values = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
        finally:
            self.opt.optimizer.zero_grad(set_to_none=True)  # an OOM mid-backward leaves gradients behind
            if self.rt.device.type == "cuda":
                torch.cuda.empty_cache()
        if "images_per_s" in values and figure in ("train", "infer"):
            flop = TRAIN_FLOP_PER_IMAGE if figure == "train" else INFER_FLOP_PER_IMAGE
            values["mfu"] = mfu(values["images_per_s"], self.peak, flop)
        self.results.append(emit(figure, **labels, **values))

    def train(self, mode: str, fused: bool, batch: int) -> None:
        """Training throughput in `mode` ("eager" or "compile") with fused attention on or off."""
        import torch

        def measure() -> dict:
            set_fused_attn(self.model, fused)
            net = torch.compile(self.model) if mode == "compile" else self.model
            s = self.sizes
            return time_train(net, self.opt, self.rt, self.params.train, batch, self.size, s["steps"], s["warmup"])

        estimate = self.sizes["compile_estimate_s"] if mode == "compile" else self.sizes["eager_estimate_s"]
        self.guarded("train", estimate, measure, mode=mode, fused_attn=fused, batch=batch)

    def inference(self) -> None:
        """Batch-256 throughput (autocast and the product's predict_proba) and batch-1 latency."""
        set_fused_attn(self.model, True)
        s, mp = self.sizes, self.params.model
        self.guarded(
            "infer",
            20,
            lambda: time_inference(self.model, self.rt, s["infer_batch"], self.size, s["iters"], 2),
            batch=s["infer_batch"],
            precision=f"autocast {self.rt.amp_dtype}" if self.rt.amp_dtype else "fp32 (no autocast)",
        )
        self.guarded(
            "infer",
            40,
            lambda: time_predict_proba(
                self.model, self.rt, s["infer_batch"] * 2, self.size, s["infer_batch"], mp.mean, mp.std
            ),
            batch=s["infer_batch"],
            precision="predict_proba (as evaluate)",
        )
        self.guarded(
            "latency", 15, lambda: time_inference(self.model, self.rt, 1, self.size, s["latency_iters"], 5), batch=1
        )

    def gradcam(self) -> None:
        """Grad-CAM seconds per image at each configured batch size."""
        mp = self.params.model
        for batch in self.sizes["cam_batches"]:
            n = batch * self.sizes["cam_batches_timed"]
            self.guarded(
                "gradcam",
                30,
                lambda b=batch, n=n: time_gradcam(self.model, n, self.size, b, mp.mean, mp.std),
                batch=batch,
            )


def summary(results: list[dict[str, Any]], peak: float | None, device_name: str) -> dict[str, Any]:
    """Best MFU with and without compile, and whether the compiled one meets the 35 % target on an H100."""

    def best(mode: str) -> float | None:
        values = [r["mfu"] for r in results if r["figure"] == "train" and r.get("mode") == mode and r.get("mfu")]
        return max(values) if values else None

    compiled = best("compile")
    return {
        "device": device_name,
        "peak_tflops": peak / 1e12 if peak else None,
        "best_mfu_eager": best("eager"),
        "best_mfu_compile": compiled,
        "target": f">= {MFU_TARGET:.0%} MFU with compile on an H100",
        "meets_target": bool(compiled is not None and compiled >= MFU_TARGET) if "H100" in device_name else None,
    }


QUICK = {
    "batches": [8],
    "steps": 3,
    "warmup": 1,
    "infer_batch": 16,
    "iters": 3,
    "latency_iters": 10,
    "cam_batches": [8],
    "cam_batches_timed": 1,
    "eager_estimate_s": 10,
    "compile_estimate_s": 120,
}
FULL = {
    "batches": [32, 64],
    "steps": 12,
    "warmup": 3,
    "infer_batch": 256,
    "iters": 5,
    "latency_iters": 50,
    "cam_batches": [8, 32],
    "cam_batches_timed": 2,
    "eager_estimate_s": 15,
    "compile_estimate_s": 100,
}


def run_figures(bench: Bench, batches: list[int], compile_: bool) -> None:
    """Every figure, most important first: the budget skips from the end (compile at the first batch is the target)."""
    first, rest = batches[0], batches[1:]
    bench.train("eager", True, first)
    if compile_:
        bench.train("compile", True, first)
    for batch in rest:
        bench.train("eager", True, batch)
    for batch in batches:
        bench.train("eager", False, batch)
    bench.inference()
    bench.gradcam()
    if compile_:
        for batch in rest:
            bench.train("compile", True, batch)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few steps, batch 8, one Grad-CAM batch (a smoke run)")
    parser.add_argument("--budget-s", type=float, default=285.0, help="wall-clock budget; later figures are skipped")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak if the GPU is not known")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile figures")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Measure every figure that fits in the budget; exit 2 when there is no CUDA device."""
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print(
            "gpu_bench: no CUDA device visible (torch.cuda.is_available() is False); run it on a GPU machine",
            file=sys.stderr,
        )
        return 2
    os.environ.setdefault("FRACTURE_NO_PROGRESS", "1")
    budget, sizes = Budget(args.budget_s), QUICK if args.quick else FULL
    device = torch.device("cuda", 0)
    name = torch.cuda.get_device_name(device)
    peak = peak_flops(name, args.peak_tflops)
    emit(
        "device",
        name=name,
        peak_tflops=peak / 1e12 if peak else None,
        torch=torch.__version__,
        cuda=torch.version.cuda,
        memory_gb=torch.cuda.get_device_properties(device).total_memory / 2**30,
    )
    bench = Bench(production_params(), device, peak, budget, sizes)
    stopped = None
    with watchdog(args.budget_s + 10):  # a figure that overruns its estimate (a slow compile) is cut short
        try:
            run_figures(bench, sizes["batches"], compile_=not args.no_compile)
        except BudgetExceeded:
            stopped = "time budget exceeded during a figure; later figures not measured"
    emit("summary", **summary(bench.results, peak, name), seconds=args.budget_s - budget.left(), stopped=stopped)
    return 0


if __name__ == "__main__":
    sys.exit(main())
