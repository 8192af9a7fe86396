"""Audit every model family, in eval and in training mode: no crash, no error-level finding on a
correct model in eval, every finding listed for checking by hand, and the audit's time as a
multiple of one eval forward pass (target: 6x or less). The ratio is taken in the process's CPU
time (one thread), which other work on a shared machine does not inflate, as the median over
rounds of paired measurements (`measure`); wall-time ratios are kept too (`wall_ratio_eval`).

Covers every torchvision classification, detection and segmentation model, 40 timm models of
different families and Hugging Face BERT, GPT-2, T5, ViT and Whisper from small configs. Random
weights, nothing downloaded; small inputs (128 px where the model allows) so it runs on 2 cores.

Detectors keep every detection up to their `detections_per_img` in eval (score threshold 0):
with random weights the class scores are saturated and most decoded boxes are degenerate, so
at the default threshold (0.05) keypointrcnn returns 0-1 detections and the Faster R-CNN
mobilenets, FCOS and RetinaNet v2 none, and their eval forward skips the box, mask and
keypoint work that a trained detector does on its detections (up to 100 per image, as in COCO
evaluation). That made the eval forward, the unit of the cost ratio, unrepresentatively cheap
(keypointrcnn: 0.4 s, its training forward 4.1 s); with threshold 0 it is 10.9 s.

`--cli-input` measures the image models (all of torchvision's, timm's) instead on the input
`modeguard audit torchvision:NAME` / `timm:NAME` gives them by default: a batch of 4 at the
model's own resolution (224 px; timm's `pretrained_cfg` size), built with the constructor's
defaults, so detectors resize it to their own size, 800 px for most (results:
model_zoo_cli.json; Hugging Face models, which the CLI gives no default input, are left out).

Usage: python benchmarks/model_zoo.py [--only REGEX] [--fresh] [--threads 1] [--results NAME]
       [--cli-input]
Resumable: models already in benchmarks/results/NAME.json (model_zoo.json) are skipped unless
--fresh; `--results` keeps a run (another version of modeguard, say) apart.
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import statistics
import time
import traceback
from collections import Counter
from typing import Any, Callable

import torch
from rich.console import Console

from _results import RESULTS, save, table as results_table
from modeguard import audit
from modeguard.runtime.loading import DEFAULT_IMAGE_SHAPE
from modeguard.runtime.state import preserved
from modeguard.runtime.trees import call_model

BATCH = 2
SMALL = 128  # smaller inputs make the audit's fixed costs (state snapshots) look large
TARGET_RATIO = 6.0

# timm: one small model per family (convnets, vision transformers, hybrids, MLPs, NAS nets).
TIMM_MODELS = """
resnet10t efficientnet_b0 mobilenetv3_small_050 mobilenetv4_conv_small convnext_atto
convnextv2_atto vit_tiny_patch16_224 deit_tiny_patch16_224 swin_tiny_patch4_window7_224
regnetx_002 regnety_002 densenet121 dla34 ghostnet_050 hrnet_w18_small levit_128s mixer_s16_224
mobilevit_xxs pit_ti_224 poolformer_s12 rexnet_100 resnest14d cspresnet50 efficientformer_l1
fastvit_t8 edgenext_xx_small crossvit_tiny_240 tinynet_e lcnet_050 mnasnet_small repvgg_a0
selecsls42b xcit_nano_12_p16_224 cait_xxs24_224 nf_resnet26 visformer_tiny coatnet_nano_rw_224
hgnetv2_b0 efficientvit_b0 mobileone_s0 gernet_s inception_v3 resmlp_12_224 tiny_vit_5m_224
eva02_tiny_patch14_224 gcvit_xxtiny
""".split()


CLI_BATCH, CLI_SIZE = DEFAULT_IMAGE_SHAPE[0], DEFAULT_IMAGE_SHAPE[-1]


def images(size: int, batch: int = BATCH) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


def first_working_size(model: torch.nn.Module, sizes=(SMALL, 224, 299)) -> int:
    """The smallest image size the model runs on in both modes (inception_v3's auxiliary
    classifier, used only in training, needs 299 px)."""
    for size in sizes:
        try:
            with preserved(model), torch.no_grad():  # training passes update BatchNorm buffers
                for training in (False, True):
                    model.train(training)
                    model(images(size))
            return size
        except Exception:  # noqa: BLE001 - too small for this architecture: try the next size
            continue
    raise RuntimeError("no image size worked")


def torchvision_entries(cli_input: bool = False) -> list[tuple[str, str, Callable]]:
    import torchvision.models as tvm

    from modeguard.runtime.loading import no_pretrained_weights

    size, batch = (CLI_SIZE, CLI_BATCH) if cli_input else (SMALL, BATCH)

    def classifier(name):
        def build():
            builder = tvm.get_model_builder(name)
            kwargs = no_pretrained_weights(builder)
            if cli_input:
                model = builder(**kwargs)
                return model, images(first_working_size(model, (size, 299)), batch), None
            if name.startswith("vit_"):  # a fixed image size, set at construction
                kwargs["image_size"] = int(re.search(r"_(\d+)$", name).group(1)) * 8
                return builder(**kwargs), images(kwargs["image_size"]), None
            model = builder(**kwargs)
            return model, images(first_working_size(model)), None
        return build

    def detector(name):
        def build():
            builder = tvm.get_model_builder(name)
            kwargs = no_pretrained_weights(builder)
            if not name.startswith("ssd") and not cli_input:  # else their own size: 800 px for most
                kwargs.update(min_size=size, max_size=size)
            # Eval keeps its top detections, as a trained detector does (see the docstring).
            kwargs["box_score_thresh" if "rcnn" in name else "score_thresh"] = 0.0
            return builder(**kwargs), images(size, batch), detection_targets(name, size, batch)
        return build

    def segmenter(name):
        def build():
            builder = tvm.get_model_builder(name)
            return builder(**no_pretrained_weights(builder)), images(size, batch), None
        return build

    return [
        *[(f"torchvision:{n}", "tv-classification", classifier(n)) for n in tvm.list_models(module=tvm)],
        *[(f"torchvision:{n}", "tv-detection", detector(n)) for n in tvm.list_models(module=tvm.detection)],
        *[(f"torchvision:{n}", "tv-segmentation", segmenter(n)) for n in tvm.list_models(module=tvm.segmentation)],
    ]


def detection_targets(name: str, size: int, batch: int) -> list[dict]:
    targets = []
    for _ in range(batch):
        target = {"boxes": torch.tensor([[8.0, 8.0, 72.0, 90.0]]), "labels": torch.tensor([1])}
        if "maskrcnn" in name:
            mask = torch.zeros(1, size, size, dtype=torch.uint8)
            mask[:, 8:90, 8:72] = 1
            target["masks"] = mask
        if "keypoint" in name:
            target["keypoints"] = torch.cat([torch.rand(1, 17, 2) * 60 + 10, torch.ones(1, 17, 1)], dim=2)
        targets.append(target)
    return targets


def timm_entries(cli_input: bool = False) -> list[tuple[str, str, Callable]]:
    import timm

    def build_of(name):
        def build():
            model = timm.create_model(name, pretrained=False)
            size = model.pretrained_cfg.get("input_size", (3, 224, 224))[-1]
            return model, images(size, CLI_BATCH if cli_input else BATCH), None
        return build

    return [(f"timm:{n}", "timm", build_of(n)) for n in TIMM_MODELS]


def huggingface_entries() -> list[tuple[str, str, Callable]]:
    import transformers as tf

    ids = torch.randint(0, 1000, (BATCH, 128), generator=torch.Generator().manual_seed(0))
    small = dict(vocab_size=1000)

    def bert():
        config = tf.BertConfig(**small, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                               intermediate_size=1024, max_position_embeddings=256, num_labels=3)
        return tf.BertForSequenceClassification(config), {"input_ids": ids}, None

    def gpt2():
        config = tf.GPT2Config(**small, n_embd=256, n_layer=4, n_head=4, n_positions=256,
                               bos_token_id=0, eos_token_id=0)
        return tf.GPT2LMHeadModel(config), {"input_ids": ids, "use_cache": True}, None

    def t5():
        config = tf.T5Config(**small, d_model=256, d_ff=1024, d_kv=64, num_heads=4, num_layers=4,
                             num_decoder_layers=4)
        return tf.T5ForConditionalGeneration(config), {
            "input_ids": ids, "decoder_input_ids": ids[:, :16], "use_cache": True
        }, None

    def vit():
        config = tf.ViTConfig(image_size=128, patch_size=16, hidden_size=128, num_hidden_layers=4,
                              num_attention_heads=4, intermediate_size=512, num_labels=3)
        return tf.ViTForImageClassification(config), {"pixel_values": images(128)}, None

    def whisper():
        config = tf.WhisperConfig(**small, d_model=128, encoder_layers=2, decoder_layers=2,
                                  encoder_attention_heads=4, decoder_attention_heads=4,
                                  encoder_ffn_dim=512, decoder_ffn_dim=512, num_mel_bins=80,
                                  max_source_positions=100, max_target_positions=64,
                                  pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
        features = torch.randn(BATCH, 80, 200, generator=torch.Generator().manual_seed(0))
        return tf.WhisperForConditionalGeneration(config), {
            "input_features": features, "decoder_input_ids": ids[:, :16], "use_cache": True
        }, None

    return [(f"hf:{n}", "huggingface", b) for n, b in
            (("bert", bert), ("gpt2", gpt2), ("t5", t5), ("vit", vit), ("whisper", whisper))]


def timed(fn) -> tuple[float, float]:
    """(wall, CPU) seconds of one call."""
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - start_cpu


def rounds_for(forward_s: float) -> int:
    """Rounds of measurement: this shared virtual machine's timings of one call vary by
    +-15%, so cheap models get several (each a few seconds)."""
    return 5 if forward_s < 0.1 else 3 if forward_s < 1.0 else 1


def measure(model, example, targets) -> dict:
    """The audit's cost in both modes as multiples of one eval forward, and both reports.

    Both are measured warm, the forward after a warm-up call and the audit after a warm-up
    audit (but for models whose forward takes a second or more). Each round times three
    forwards (their median), then the audit in each mode: a round's ratios pair measurements
    taken moments apart, and the result is the median over the rounds (the same in wall time)."""
    def forward():
        model.eval()
        with torch.no_grad():
            call_model(model, example)

    reports = {}

    def audit_in(training: bool):
        def run():
            model.train(training)
            reports[training] = audit(model, example, targets=targets, random_input=True)
        return run

    forward()
    first_wall, _ = timed(forward)
    if first_wall < 1.0:  # an expensive model's first-call costs are small beside its forward
        audit_in(False)()
    ratios: dict[str, list[float]] = {"eval": [], "train": [], "wall_eval": [], "wall_train": []}
    forwards, forwards_cpu = [], []
    for _ in range(rounds_for(first_wall)):
        walls, cpus = zip(*(timed(forward) for _ in range(3)))
        forward_wall, forward_cpu = statistics.median(walls), statistics.median(cpus)
        forwards.append(forward_wall)
        forwards_cpu.append(forward_cpu)
        for mode, training in (("eval", False), ("train", True)):
            wall, cpu = timed(audit_in(training))
            ratios[mode].append(cpu / forward_cpu)
            ratios[f"wall_{mode}"].append(wall / forward_wall)
    return {
        "forward_s": statistics.median(forwards),
        "forward_cpu_s": statistics.median(forwards_cpu),
        "rounds": len(forwards),
        "ratio_eval": statistics.median(ratios["eval"]),
        "ratio_train": statistics.median(ratios["train"]),
        "wall_ratio_eval": statistics.median(ratios["wall_eval"]),
        "wall_ratio_train": statistics.median(ratios["wall_train"]),
        "ratios_eval": ratios["eval"],
        "ratios_train": ratios["train"],
        "eval": summary_of(reports[False]),
        "train": summary_of(reports[True]),
    }


def summary_of(report) -> dict:
    return {
        "codes": dict(sorted(Counter(f.code for f in report.findings).items())),
        "errors": [f"{f.code} {f.module or '-'}: {f.message}" for f in report.errors],
        "findings": [
            {"code": f.code, "severity": f.severity.value, "module": f.module, "message": f.message}
            for f in report.findings
        ],
        "train_vs_eval_note": report.train_vs_eval_note,
        "deterministic": report.deterministic,
        "batch_independent": report.batch_independent,
        "not_tested": report.not_tested,
    }


def run_one(name: str, family: str, build: Callable) -> dict:
    torch.manual_seed(0)
    row: dict[str, Any] = {"model": name, "family": family}
    try:
        model, example, targets = build()
        row["input"] = describe_input(example)
        row.update(measure(model, example, targets), crash=None)
    except Exception as exc:  # noqa: BLE001 - a crash is the result to report
        row["crash"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        row["traceback"] = traceback.format_exc(limit=6)
    return row


def describe_input(example) -> str:
    if isinstance(example, torch.Tensor):
        return "x".join(map(str, example.shape))
    if isinstance(example, dict):
        return ", ".join(f"{k} {'x'.join(map(str, v.shape))}" for k, v in example.items() if isinstance(v, torch.Tensor))
    return type(example).__name__


def codes_text(summary: dict | None) -> str:
    if not summary:
        return "-"
    return " ".join(f"{code}x{n}" if n > 1 else code for code, n in summary["codes"].items()) or "none"


def print_table(rows: list[dict]) -> None:
    table = results_table(
        f"modeguard audit across model families (random weights, {torch.get_num_threads()} thread(s), "
        f"torch {torch.__version__}; audit / forward in CPU time)",
        ("model", "input", "forward (ms)", "audit eval / fwd", "audit train / fwd", "eval findings", "train findings"),
    )
    for r in rows:
        if r.get("crash"):
            table.add_row(r["model"], r.get("input", "-"), "-", "CRASH", "-", r["crash"][:60], "-")
            continue
        table.add_row(
            r["model"], r["input"], f"{r['forward_s'] * 1000:.0f}", f"{r['ratio_eval']:.1f}x",
            f"{r['ratio_train']:.1f}x", codes_text(r["eval"]), codes_text(r["train"]),
        )
    Console(width=200).print(table)
    done = [r for r in rows if not r.get("crash")]
    if not done:
        return
    eval_errors = [r["model"] for r in done if r["eval"]["errors"]]
    over = [f"{r['model']} ({r['ratio_eval']:.1f}x)" for r in done if r["ratio_eval"] > TARGET_RATIO]
    families = Counter(r["family"] for r in rows)
    ratios = [r["ratio_eval"] for r in done]
    Console(width=200).print(
        f"models: {len(rows)} ({', '.join(f'{f} {n}' for f, n in sorted(families.items()))}); "
        f"crashes: {len(rows) - len(done)}; error-level findings in eval: {len(eval_errors)} "
        f"{eval_errors}; audit/forward in eval: median {statistics.median(ratios):.1f}x, "
        f"max {max(ratios):.1f}x; over {TARGET_RATIO:g}x: {over or 'none'}"
    )
    totals = Counter()
    for r in done:
        totals.update({f"eval {c}": n for c, n in r["eval"]["codes"].items()})
        totals.update({f"train {c}": n for c, n in r["train"]["codes"].items()})
    Console(width=200).print("findings over all models: " + ", ".join(f"{k} {v}" for k, v in sorted(totals.items())))


def markdown_summary(rows: list[dict]) -> str:
    """Per family: models, crashes, error-level findings in eval, audit/forward, findings."""
    lines = [
        "| family | models | crashes | error-level in eval | audit/forward eval: median (max) | "
        "training mode: median (max) | over 6x (eval) | findings in eval / in training |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for family in sorted({r["family"] for r in rows}):
        group = [r for r in rows if r["family"] == family]
        done = [r for r in group if not r.get("crash")]
        ratios = [r["ratio_eval"] for r in done] or [0.0]
        train_ratios = [r["ratio_train"] for r in done] or [0.0]
        over = [f"{r['model'].split(':', 1)[1]} {r['ratio_eval']:.1f}x" for r in done if r["ratio_eval"] > TARGET_RATIO]
        counts = {mode: Counter() for mode in ("eval", "train")}
        for r in done:
            for mode in counts:
                counts[mode].update(r[mode]["codes"])
        found = " / ".join(
            ", ".join(f"{code} {n}" for code, n in sorted(counts[mode].items())) or "none" for mode in counts
        )
        lines.append(
            f"| {family} | {len(group)} | {len(group) - len(done)} | "
            f"{sum(1 for r in done if r['eval']['errors'])} | {statistics.median(ratios):.1f}x "
            f"({max(ratios):.1f}x) | {statistics.median(train_ratios):.1f}x ({max(train_ratios):.1f}x) | "
            f"{', '.join(over) or 'none'} | {found} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", help="regular expression on model names (e.g. 'tv-detection|hf:')")
    parser.add_argument("--fresh", action="store_true", help="re-run the selected models even if already in the results")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--list", action="store_true", help="list the models and exit")
    parser.add_argument("--markdown", action="store_true", help="print the per-family summary of the results and exit")
    parser.add_argument("--results", help="name of the results file in benchmarks/results "
                        "(default: model_zoo, with --cli-input model_zoo_cli)")
    parser.add_argument("--cli-input", action="store_true",
                        help="image models only, on the CLI's default input (see the docstring)")
    args = parser.parse_args()
    args.results = args.results or ("model_zoo_cli" if args.cli_input else "model_zoo")
    torch.set_num_threads(args.threads)
    all_entries = [*torchvision_entries(args.cli_input), *timm_entries(args.cli_input)]
    if not args.cli_input:
        all_entries += huggingface_entries()
    entries = all_entries
    if args.only:
        entries = [e for e in entries if re.search(args.only, f"{e[1]} {e[0]}")]
    if args.list:
        print("\n".join(f"{family:18} {name}" for name, family, _ in entries))
        return
    path = RESULTS / f"{args.results}.json"
    if args.markdown:
        print(markdown_summary(json.loads(path.read_text())))
        return
    results = {r["model"]: r for r in json.loads(path.read_text())} if path.exists() else {}
    for name, family, build in entries:
        if name in results and not results[name].get("crash") and not args.fresh:
            continue
        row = run_one(name, family, build)
        results[name] = row
        status = row.get("crash") or f"{row['ratio_eval']:.1f}x eval, {codes_text(row['eval'])}"
        print(f"{name}: {status}", flush=True)
        save(args.results, list(results.values()))
        gc.collect()
    order = {name: i for i, (name, _, _) in enumerate(all_entries)}
    rows = sorted((r for r in results.values() if not args.only or re.search(args.only, f"{r['family']} {r['model']}")),
                  key=lambda r: order.get(r["model"], len(order)))
    print_table(rows)


if __name__ == "__main__":
    main()
