"""BatchNorm recalibration, side by side in one run: modeguard.recalibrate_bn,
torch.optim.swa_utils.update_bn and fvcore.nn.precise_bn.update_bn_stats.

1. Accuracy of the statistics: uneven batches (64, 64, 64, 5) from shifting distributions,
   through a model with Dropout between BatchNorm layers, against the exact statistics of all
   samples (BatchNorm on batch statistics, dropout off).
2. Time on resnet50 (CPU, 16 batches of 8 at 224x224).
3. Effect on predictions: a small CNN trained on scikit-learn's digits, evaluated on a
   brightness/contrast-shifted copy before and after recalibrating on the unlabeled shifted
   images; and batch-of-one predictions in training vs eval mode.

Usage: python benchmarks/bn_recalibration.py   (writes benchmarks/results/bn_recalibration.json)
"""

from __future__ import annotations

import copy
import time

import torch
import torchvision
from fvcore.nn.precise_bn import update_bn_stats
from rich.console import Console
from sklearn.datasets import load_digits
from torch import nn
from torch.optim.swa_utils import update_bn

from _results import save, table as results_table

import modeguard

console = Console(highlight=False)


def with_dropout_between() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.3),
        nn.Linear(32, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.3),
        nn.Linear(32, 8), nn.BatchNorm1d(8),
    )


def batchnorms(model):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def exact_statistics(model, batches):
    model = copy.deepcopy(model).eval()
    seen: dict[str, list] = {}
    for name, bn in batchnorms(model):
        bn.train()
        bn.register_forward_pre_hook(lambda m, a, name=name: seen.setdefault(name, []).append(a[0].double()))
    with torch.no_grad():
        for b in batches:
            model(b)
    return {name: (torch.cat(xs).mean(0), torch.cat(xs).var(0)) for name, xs in seen.items()}


def errors(model, reference):
    rows = {}
    for name, bn in batchnorms(model):
        mean, var = reference[name]
        mean_err = float(((bn.running_mean.double() - mean).abs() / var.sqrt()).max())
        var_err = float((bn.running_var.double() / var - 1).abs().max())
        rows[name] = (mean_err, var_err)
    return rows


def accuracy_part() -> dict:
    torch.manual_seed(1)
    sizes, shifts = (64, 64, 64, 5), (0.0, 1.0, -1.0, 3.0)
    batches = [torch.randn(n, 16) * (1 + abs(s)) + s for n, s in zip(sizes, shifts)]
    base = with_dropout_between()
    reference = exact_statistics(base, batches)
    ours, swa, precise = copy.deepcopy(base), copy.deepcopy(base), copy.deepcopy(base)
    modeguard.recalibrate_bn(ours, batches, progress=False)
    torch.manual_seed(2)
    update_bn(batches, swa)
    torch.manual_seed(2)
    precise.train()  # fvcore leaves modes to the user; its docs ask for training mode
    update_bn_stats(precise, batches, num_iters=len(batches))
    results = {"modeguard": errors(ours, reference), "swa_utils.update_bn": errors(swa, reference),
               "fvcore update_bn_stats": errors(precise, reference)}
    table = results_table(
        "1. accuracy of running statistics vs exact (batches 64,64,64,5; dropout between BatchNorms)",
        ["layer", *(f"{method}\nmean err (std) / var err (rel)" for method in results)],
    )
    for name, _ in batchnorms(base):
        table.add_row(name, *[f"{results[m][name][0]:.2e} / {results[m][name][1]:.2e}" for m in results])
    console.print(table)
    return {m: {layer: {"mean_err_std": e[0], "var_err_rel": e[1]} for layer, e in r.items()} for m, r in results.items()}


def timing_part(batches: int = 16, batch_size: int = 8) -> dict:
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None)
    data = [torch.randn(batch_size, 3, 224, 224) for _ in range(batches)]
    with torch.no_grad():
        model.train()(data[0])  # warm-up

    def run(fn):
        m = copy.deepcopy(model)
        start = time.perf_counter()
        fn(m)
        return time.perf_counter() - start

    def fvcore_run(m):
        m.train()
        update_bn_stats(m, data, num_iters=batches)

    times = {
        "swa_utils.update_bn": run(lambda m: update_bn(data, m)),
        "modeguard": run(lambda m: modeguard.recalibrate_bn(m, data, progress=False)),
        "fvcore update_bn_stats": run(fvcore_run),
    }
    table = results_table(f"2. time, resnet50 on CPU, {batches} batches of {batch_size}", ("method", "seconds", "vs update_bn"))
    for method, seconds in times.items():
        table.add_row(method, f"{seconds:.2f}", f"{seconds / times['swa_utils.update_bn']:.2f}x")
    console.print(table)
    return times


class DigitsNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(0.3), nn.Linear(32 * 16, 10),
        )

    def forward(self, x):
        return self.features(x)


def accuracy(model, x, y, batch_size=128):
    with torch.no_grad():
        preds = torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
    return float((preds == y).float().mean())


def digits_part() -> dict:
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(x), generator=generator)
    train, test = order[:1400], order[1400:]
    torch.manual_seed(0)
    model = DigitsNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(8):
        for i in range(0, len(train), 64):
            idx = train[torch.randperm(len(train), generator=generator)[:64]]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
    model.eval()

    def shift(images):
        return images * 0.4 + 0.5  # lower contrast, brighter

    results = {"clean, eval": accuracy(model, x[test], y[test]), "shifted, stale statistics": accuracy(model, shift(x[test]), y[test])}
    recalibrated = copy.deepcopy(model)
    modeguard.recalibrate_bn(recalibrated, [shift(x[train][i : i + 64]) for i in range(0, 1400, 64)], progress=False)
    results["shifted, recalibrated on unlabeled shifted images"] = accuracy(recalibrated, shift(x[test]), y[test])
    torch.manual_seed(0)
    with modeguard.training(model), torch.no_grad():
        single_train = float(torch.tensor([model(x[i : i + 1]).argmax(1).item() == y[i].item() for i in test]).float().mean())
    with modeguard.evaluating(model):
        single_eval = float(torch.tensor([model(x[i : i + 1]).argmax(1).item() == y[i].item() for i in test]).float().mean())
    results["clean, batch of 1, training mode"] = single_train
    results["clean, batch of 1, eval mode"] = single_eval
    table = results_table(f"3. digits CNN (BatchNorm + Dropout), {len(test)} test images", ("setting", "accuracy"))
    for name, acc in results.items():
        table.add_row(name, f"{acc:.1%}")
    console.print(table)
    return results


def main() -> None:
    results = {"accuracy": accuracy_part(), "time": timing_part(), "digits": digits_part()}
    save("bn_recalibration", results)


if __name__ == "__main__":
    main()
