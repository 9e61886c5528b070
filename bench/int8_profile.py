"""Where the int8 model's time goes: ONNX Runtime's per-node profile, fp32 against int8.

python -m bench.int8_profile [--runs 200] [--depthwise-experiment]

Runs each model single-threaded on the same batch-1 tensor with session profiling on, then
sums the node times by operator type (and, for convolutions, by kind: depthwise, pointwise
1x1, or full kxk). Shares are what matter; absolute times move with the machine's load.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from bench.common import REPO
from imgclass.vision.classifier import model_path
from imgclass.vision.export import MODEL_NAME


def conv_kinds(path: Path) -> dict[str, str]:
    """Node or tensor name -> 'depthwise' / '1x1' / 'kxk' for every convolution.

    ONNX Runtime renames fused nodes after the tensor they produce (a Conv fused with
    its Clip is profiled as "<Clip output>_nchwc"), so a conv's kind is also recorded
    under every tensor reached from it through single-input elementwise nodes.
    """
    kinds: dict[str, str] = {}
    for node in onnx.load(str(path)).graph.node:
        if node.op_type in ("Conv", "QLinearConv", "ConvInteger"):
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if attrs.get("group", 1) > 1:
                kind = "depthwise"
            else:
                kind = "1x1" if list(attrs.get("kernel_shape", [1, 1])) == [1, 1] else "kxk"
        elif node.op_type in ("BatchNormalization", "Clip", "Relu") and node.input[0] in kinds:
            kind = kinds[node.input[0]]
        else:
            continue
        kinds[node.name] = kind
        kinds.update(dict.fromkeys(node.output, kind))
    return kinds


def profile(path: Path, runs: int) -> dict[str, float]:
    """Mean microseconds per inference by operator type."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    with tempfile.TemporaryDirectory() as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "prof")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        batch = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
        for _ in range(runs):
            session.run(None, {name: batch})
        events = json.loads(Path(session.end_profiling()).read_text())
    kinds = conv_kinds(path)
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        # "_nchwc" (fp32 layout pass) and "_token_N" (int8 NHWC pass) are runtime renames.
        node = re.sub(r"(_nchwc|_token_\d+)$", "", event["name"].removesuffix("_kernel_time"))
        op = event["args"]["op_name"]
        kind = kinds.get(node)
        label = f"{op} ({kind})" if kind and "Conv" in op else op
        totals[label] += event["dur"] / runs
    return dict(totals)


def best_ms(paths: dict[str, Path], rounds: int = 8, runs: int = 30) -> dict[str, float]:
    """Best-of-rounds ms per batch-1 inference, models interleaved so load hits all alike."""
    from imgclass.vision.classifier import OnnxClassifier

    models = {name: OnnxClassifier(path) for name, path in paths.items()}
    batch = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    best = dict.fromkeys(models, float("inf"))
    for _ in range(rounds):
        for name, model in models.items():
            model.logits(batch)
            started = time.perf_counter()
            for _ in range(runs):
                model.logits(batch)
            best[name] = min(best[name], (time.perf_counter() - started) / runs * 1000)
    return best


def depthwise_experiment(models: Path) -> None:
    """Does leaving the depthwise convolutions in fp32 make the int8 model faster?"""
    from imgclass.vision.classifier import OnnxClassifier
    from imgclass.vision.quantize import depthwise_conv_names, quantize_int8

    fp32 = model_path(models, MODEL_NAME, "fp32")
    with tempfile.TemporaryDirectory() as tmp:
        variant = Path(tmp) / "int8-depthwise-fp32.onnx"
        prep = OnnxClassifier(fp32).preprocessing
        quantize_int8(fp32, variant, prep, keep_fp32=depthwise_conv_names(fp32))
        paths = {
            "fp32": fp32,
            "int8 (shipped)": model_path(models, MODEL_NAME, "int8"),
            "int8, depthwise kept fp32": variant,
        }
        timings = best_ms(paths)
    print("\n| model | best ms per image | speed-up over fp32 |\n| --- | ---: | ---: |")
    for name, ms in timings.items():
        print(f"| {name} | {ms:.2f} | {timings['fp32'] / ms:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--depthwise-experiment", action="store_true")
    args = parser.parse_args()
    models = REPO / "models"
    fp32 = profile(model_path(models, MODEL_NAME, "fp32"), args.runs)
    int8 = profile(model_path(models, MODEL_NAME, "int8"), args.runs)
    for title, table in (("fp32", fp32), ("int8", int8)):
        total = sum(table.values())
        print(f"\n{title}: {total:.0f} µs per image in operators")
        print("| operator | µs per image | share |\n| --- | ---: | ---: |")
        for op, us in sorted(table.items(), key=lambda kv: -kv[1]):
            print(f"| {op} | {us:.0f} | {us / total:.0%} |")
    if args.depthwise_experiment:
        depthwise_experiment(models)


if __name__ == "__main__":
    main()
