"""Checks that need a CUDA GPU, headless (no Qt), run as a whole on a lent GPU machine.

    python benchmarks/gpu_checks.py --data CIFAR.tar.gz --images DIR [--work DIR] [--json FILE]
        [--only step_floor,classify,cifar]

* step_floor: the Fast GPU net's bare training step (eager, queued vs. finished, as a CUDA
  graph) and a profile of its kernels;
* classify: ``python -m engine classify`` on the photos with ``--device cuda`` in fp32 and auto
  (fp16), against the CPU in fp32 and against EfficientNet-Lite0 called directly on the GPU with
  the same preprocessing: top-1 agreement and the largest probability difference;
* cifar: ``python -m engine cifar train --device cuda`` for 2 epochs with a checkpoint, resumed to
  3, exported to TorchScript and ONNX; the ONNX file run by onnxruntime (when installed) against
  the TorchScript file on the same images.

Prints one line per check and, with ``--json``, writes every number to a file.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEVICE = "cuda"  # --device: "cpu" only to smoke-test this script
EXTRA_TRAIN_ARGS: list[str] = []


def run_cli(args: list[str], timeout: float = 300) -> tuple[int, str, str, float]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "engine", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - start


def check_classify(images: Path, report: dict) -> None:
    import torch
    from PIL import Image
    from torchvision import transforms

    from engine.classify.lite0 import load_lite0

    outputs = {}
    for name, device, precision in [("cpu_fp32", "cpu", "fp32"), ("cuda_fp32", DEVICE, "fp32"),
                                    ("cuda_auto", DEVICE, "auto")]:  # auto: fp16 on CUDA
        rc, out, err, seconds = run_cli(["classify", str(images), "--device", device,
                                         "--precision", precision, "--json"])
        if rc != 0:
            report[f"classify_{name}"] = {"rc": rc, "stderr": err[-2000:]}
            print(f"classify {name}: exit {rc}: {err.strip()[-500:]}", flush=True)
            continue
        outputs[name] = {Path(e["path"]).name: e for e in json.loads(out)}
        labels = {k: (e["top"][0]["label"] if e["top"] else e["error"])
                  for k, e in outputs[name].items()}
        report[f"classify_{name}"] = {"rc": rc, "seconds": round(seconds, 2), "top1": labels}
        print(f"classify {name}: {seconds:.1f} s, {labels}", flush=True)

    def probs(entries):
        return {k: {t["index"]: t["prob"] for t in e["top"]} for k, e in entries.items()}

    # The same model called directly on the GPU in fp32 with the same preprocessing.
    from engine.devices import true_fp32

    model = load_lite0().eval().to(DEVICE)
    prep = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224),
                               transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)])
    direct = {}
    with torch.inference_mode(), true_fp32(torch.device(DEVICE)):
        for path in sorted(images.iterdir()):
            x = prep(Image.open(path).convert("RGB")).unsqueeze(0).to(DEVICE)
            p = torch.softmax(model(x).float(), dim=1)[0].cpu()
            direct[path.name] = p
    if "cuda_fp32" not in outputs:
        return
    ref = probs(outputs["cuda_fp32"])
    for name, entries in outputs.items():
        got = probs(entries)
        same_top1 = all(entries[k]["top"][0]["index"] == outputs["cuda_fp32"][k]["top"][0]["index"]
                        for k in entries if entries[k]["top"])
        diff = max(abs(got[k][i] - ref[k].get(i, 0.0)) for k in got for i in got[k])
        report[f"classify_{name}"].update(same_top1_as_cuda_fp32=same_top1,
                                          max_prob_diff_vs_cuda_fp32=diff)
        print(f"  {name}: same top-1 as cuda fp32: {same_top1}; max prob diff {diff:.2e}",
              flush=True)
    diff = max(abs(p - float(direct[k][i])) for k, row in ref.items() for i, p in row.items())
    report["classify_cuda_fp32_vs_direct_call"] = diff
    print(f"  cuda fp32 vs the model called directly on the GPU: max prob diff {diff:.2e}",
          flush=True)


def check_cifar(data: Path, work: Path, report: dict) -> None:
    ckpt = work / "cifar.pt"
    common = ["cifar", "train", "--data", str(data), "--device", DEVICE, "--json",
              "--checkpoint", str(ckpt)]
    rc, out, err, seconds = run_cli([*common, "--epochs", "2", *EXTRA_TRAIN_ARGS])
    first = json.loads(out) if rc == 0 else None
    report["cifar_cli_2_epochs"] = first or {"rc": rc, "stderr": err[-2000:]}
    print(f"cifar train 2 epochs on cuda: exit {rc}, "
          f"{first and first['test_acc']} in {first and first['train_time_s']} s "
          f"({seconds:.1f} s whole process)" if rc == 0 else err.strip()[-800:], flush=True)
    if rc != 0:
        return
    rc, out, err, _ = run_cli(["cifar", "train", "--resume", str(ckpt), "--epochs", "3",
                               "--device", DEVICE, "--json"])
    resumed = json.loads(out) if rc == 0 else None
    report["cifar_cli_resume_to_3"] = ({k: resumed[k] for k in ("test_acc", "epochs")}
                                       if resumed else {"rc": rc, "stderr": err[-2000:]})
    print(f"cifar resume to 3 epochs: exit {rc}, "
          f"{resumed and (resumed['test_acc'], resumed['epochs'])}", flush=True)
    for suffix in (".ts.pt", ".onnx"):
        rc, out, err, _ = run_cli(["cifar", "export", str(ckpt), str(work / f"model{suffix}"),
                                   "--json"])
        report[f"cifar_export{suffix}"] = {"rc": rc, "stderr": err[-1000:]}
        print(f"cifar export {suffix}: exit {rc} {err.strip()[-500:]}", flush=True)
    try:
        import numpy as np
        import onnxruntime
        import torch
    except ImportError as exc:
        print(f"onnxruntime check skipped: {exc}", flush=True)
        return
    x = torch.rand(16, 3, 32, 32)
    scripted = torch.jit.load(str(work / "model.ts.pt"), map_location="cpu")
    expected = scripted(x).detach().numpy()
    session = onnxruntime.InferenceSession(str(work / "model.onnx"),
                                           providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": x.numpy()})[0]
    diff = float(np.abs(got - expected).max())
    same = bool((got.argmax(1) == expected.argmax(1)).all())
    report["cifar_onnx_vs_torchscript"] = {"max_abs_diff": diff, "same_argmax": same}
    print(f"ONNX (onnxruntime) vs TorchScript: max |diff| {diff:.2e}, same argmax {same}",
          flush=True)


def check_step_floor(report: dict, steps: int = 100, batch: int = 1024, warmup: int = 10) -> None:
    """The Fast GPU net's bare training step (batch 1024, bf16 autocast, channels_last, fused
    SGD, no augmentation, lookahead or bookkeeping), timed over ``steps`` steps between two
    synchronizations: the floor that the trainer's per-step overhead is measured against. On
    CUDA also the same step captured once as a CUDA graph and replayed (no per-kernel launch
    cost from Python), and a profile of its kernels."""
    import torch
    import torch.nn.functional as F

    from engine.cifar.fast import build_fast_net

    torch.backends.cudnn.benchmark = True
    images = torch.randint(0, 256, (5000, 3, 32, 32), dtype=torch.uint8, device=DEVICE)
    model = build_fast_net(10, images, variant="gpu").to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.optimizer_param_groups(1.5, 1.33e-3), lr=1.5,
                                momentum=0.85, nesterov=True,
                                fused=DEVICE.startswith("cuda"))
    x = torch.randn(batch, 3, 32, 32, device=DEVICE).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=DEVICE)

    def step():
        with torch.autocast(torch.device(DEVICE).type, dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x).float(), y, label_smoothing=0.2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()

    def forward():
        with torch.no_grad(), torch.autocast(torch.device(DEVICE).type, dtype=torch.bfloat16):
            model(x)

    timings = {}
    for name, fn in (("train_step", step), ("forward_eval", forward)):
        model.train(name == "train_step")
        if DEVICE.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        # Time to queue the work: close to the total means the CPU (Python, launches) is the
        # bottleneck, far below it means the GPU is.
        timings[name + "_enqueue"] = (time.perf_counter() - start) / steps * 1000
        if DEVICE.startswith("cuda"):
            torch.cuda.synchronize()
        timings[name] = (time.perf_counter() - start) / steps * 1000
    model.train()
    if DEVICE.startswith("cuda"):
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                step()
            torch.cuda.synchronize()
        table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=18,
                                          max_name_column_width=60)
        report["cifar_step_profile"] = table
        print(table, flush=True)
        try:
            timings["graphed_train_step"] = _graphed_step_ms(model, optimizer, x, y, steps)
        except Exception as exc:  # a measurement, not a feature: report why and go on
            timings["graphed_train_step_error"] = f"{type(exc).__name__}: {exc}"[:500]
            print(f"CUDA graph capture failed: {timings['graphed_train_step_error']}", flush=True)
    report["cifar_step_floor_ms"] = timings
    print(f"Fast GPU net, batch {batch}: bare train step {timings['train_step']:.2f} ms "
          f"(queued in {timings['train_step_enqueue']:.2f} ms) "
          f"(10 epochs of 48 steps: {timings['train_step'] * 480 / 1000:.2f} s); "
          f"eval forward {timings['forward_eval']:.2f} ms; as a CUDA graph "
          f"{timings.get('graphed_train_step', float('nan')):.2f} ms", flush=True)


def _graphed_step_ms(model, optimizer, x, y, steps: int) -> float:
    """ms per replay of one training step captured as a CUDA graph (fixed lr; the pattern of
    PyTorch's whole-network capture: warm up on a side stream, capture, replay)."""
    import torch
    import torch.nn.functional as F

    def body():
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
            loss = F.cross_entropy(model(x).float(), y, label_smoothing=0.2)
        loss.backward()
        optimizer.step()

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            optimizer.zero_grad(set_to_none=True)
            body()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        body()
    for _ in range(5):
        graph.replay()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        graph.replay()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/torchdesk-gpu-checks"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--cifar-args", default="", help="extra train arguments (smoke tests)")
    parser.add_argument("--only", default="step_floor,classify,cifar",
                        help="comma-separated checks to run")
    args = parser.parse_args()
    global DEVICE, EXTRA_TRAIN_ARGS
    DEVICE, EXTRA_TRAIN_ARGS = args.device, args.cifar_args.split()
    args.work.mkdir(parents=True, exist_ok=True)
    report: dict = {}
    for name, check in (("step_floor", lambda: check_step_floor(report)),
                        ("classify", lambda: check_classify(args.images, report)),
                        ("cifar", lambda: check_cifar(args.data, args.work, report))):
        if name not in args.only.split(","):
            continue
        try:
            check()
        except Exception as exc:  # report and go on to the next check
            import traceback

            report[f"{name}_error"] = traceback.format_exc()
            print(f"{name} check failed: {type(exc).__name__}: {exc}", flush=True)
        if args.json:
            args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
