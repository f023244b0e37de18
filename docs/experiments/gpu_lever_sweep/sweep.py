"""Leave-one-condition-out lever sweep on a GPU (float, PyTorch port of the Keras recipe).

For each configuration and each of the 7 culture conditions: fine-tune the ImageNet
EfficientNet-Lite on the other 6 conditions, score the held-out one (a) on the data set's own
masks (crop level) and (b) on the Pi detector's masks of the same crops put back on their
background (what a rig sees). Results as JSON lines, one per fold, then a summary."""

import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from lite_torch import Lite

torch.backends.cudnn.benchmark = True
dev = "cuda" if torch.cuda.is_available() else "cpu"
out_dir = os.environ.get("OUT", ".")
data = np.load("windows.npz")
DS = torch.from_numpy(data["ds"]).to(dev)
SERVED = torch.from_numpy(data["served"]).to(dev)  # (N, 2, 192, 192)
Y = torch.from_numpy(data["labels"]).float().to(dev)
GROUPS = data["groups"]
CONDITIONS = sorted(set(GROUPS))
if os.environ.get("HELD"):
    CONDITIONS = [os.environ["HELD"]]
WEIGHTS = {name: dict(np.load(f"{name}.npz")) for name in ("lite0", "lite1", "lite2")}


def auc(scores, labels):
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    # average ranks of ties
    s = np.asarray(scores)[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j + 2) / 2
        i = j + 1
    pos = labels == 1
    n1, n0 = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def bacc(scores, labels):
    called = scores >= 0.5
    return float(((called[labels == 1]).mean() + (~called[labels == 0]).mean()) / 2)


class Net(nn.Module):
    def __init__(self, backbone, dropout=0.2):
        super().__init__()
        self.body = Lite(WEIGHTS[backbone])
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(self.body._fc.in_features, 1)

    def forward(self, grey):  # grey: float 0..255 (N, 1, s, s)
        x = ((grey - 127.0) / 128.0).expand(-1, 3, -1, -1)
        return self.head(self.drop(self.body.features(x))).squeeze(1)


def augment(win, gen):
    """win uint8 (N,192,192) -> float (N,1,192,192) with the recipe's geometric and photometric jitter."""
    n = win.shape[0]
    x = win.float().unsqueeze(1)
    mask = (x > 0).float()
    k = torch.randint(0, 4, (n,), device=dev, generator=gen).float()
    angle = k * (math.pi / 2) + (torch.rand(n, device=dev, generator=gen) - 0.5) * (math.pi / 2)
    scale = 1 + (torch.rand(n, device=dev, generator=gen) - 0.5) * 0.3
    flip = torch.where(torch.rand(n, device=dev, generator=gen) < 0.5, -1.0, 1.0)
    shift = (torch.rand(n, 2, device=dev, generator=gen) - 0.5) * 2 * 4 / 96  # +-4 px in normalised units
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, shift[:, 0]], 1), torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, x.shape, align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", align_corners=False)
    mask = F.grid_sample(mask, grid, mode="nearest", align_corners=False)

    def r(lo, hi):
        return torch.rand(n, 1, 1, 1, device=dev, generator=gen) * (hi - lo) + lo

    inside = mask > 0
    mean = (x * mask).sum((2, 3), keepdim=True) / mask.sum((2, 3), keepdim=True).clamp(min=1)
    x = (x - mean) * r(0.85, 1.15) + mean
    x = x * r(0.85, 1.15) + r(-16, 16)
    x = x + torch.randn(x.shape, device=dev, generator=gen) * r(0, 4)
    x = torch.where(inside, x.clamp(1, 255).round(), torch.zeros_like(x))
    return x


def finish(x, size):
    """float (N,1,192,192) -> the model's uint8-valued input at size (antialiased bilinear, as Pillow)."""
    if size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255)


def predict(model, windows, size):
    model.eval()
    out = []
    with torch.no_grad(), torch.autocast(dev, dtype=torch.bfloat16):
        for i in range(0, len(windows), 256):
            out.append(torch.sigmoid(model(finish(windows[i : i + 256].float().unsqueeze(1), size)).float()))
    return torch.cat(out).cpu().numpy()


def fit(train_windows, train_labels, cfg, seed):
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)
    torch.manual_seed(seed)
    model = Net(cfg["backbone"]).to(dev).to(memory_format=torch.channels_last)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    other = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 1e-2}, {"params": other, "weight_decay": 0}], lr=cfg["lr"]
    )
    n, bs = len(train_windows), 64
    steps = cfg["epochs"] * math.ceil(n / bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["lr"], total_steps=steps, pct_start=0.3, div_factor=25)
    pos = train_labels.mean()
    w_pos, w_neg = 0.5 / pos, 0.5 / (1 - pos)
    for _epoch in range(cfg["epochs"]):
        model.train()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()  # the ImageNet statistics stay (as train/efficientnet_lite.py)
        perm = torch.randperm(n, device=dev, generator=gen)
        for i in range(0, n, bs):
            idx = perm[i : i + bs]
            x = finish(augment(train_windows[idx], gen), cfg["size"]).contiguous(memory_format=torch.channels_last)
            y = train_labels[idx]
            with torch.autocast(dev, dtype=torch.bfloat16):
                logit = model(x).float()
            loss = (
                F.binary_cross_entropy_with_logits(logit, y, reduction="none") * torch.where(y > 0, w_pos, w_neg)
            ).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model


def run(cfg, seed, log):
    folds = []
    for held in CONDITIONS:
        test = torch.from_numpy(held == GROUPS).to(dev)
        tr = ~test
        if cfg["train_on"] == "ds":
            tw, ty = DS[tr], Y[tr]
        elif cfg["train_on"] == "served":
            tw, ty = SERVED[tr].flatten(0, 1), Y[tr].repeat_interleave(2)
        else:  # both
            tw = torch.cat([DS[tr], SERVED[tr][:, 0]])
            ty = torch.cat([Y[tr], Y[tr]])
        keep = tw.flatten(1).amax(1) > 0
        t0 = time.time()
        model = fit(tw[keep], ty[keep], cfg, seed)
        labels = data["labels"][held == GROUPS]
        p_ds = predict(model, DS[test], cfg["size"])
        sw = SERVED[test]
        p_sv = np.stack([predict(model, sw[:, r], cfg["size"]) for r in range(2)], 1)
        ok = (sw.flatten(2).amax(2) > 0).cpu().numpy()
        sv_scores, sv_labels = p_sv[ok], np.repeat(labels[:, None], 2, 1)[ok]
        fold = {
            "config": cfg["name"],
            "seed": seed,
            "held_out": held,
            "cells": len(labels),
            "auc_crop": auc(p_ds, labels),
            "bacc_crop": bacc(p_ds, labels),
            "auc_pi_mask": auc(sv_scores, sv_labels),
            "bacc_pi_mask": bacc(sv_scores, sv_labels),
            "pi_mask_renderings": int(ok.sum()),
            "fit_s": round(time.time() - t0, 1),
        }
        folds.append(fold)
        print(json.dumps(fold), flush=True)  # stdout too: a lent machine returns only a few files
        log.write(json.dumps(fold) + "\n")
        log.flush()
    summary = {
        "config": cfg["name"],
        "seed": seed,
        **{k: cfg[k] for k in ("backbone", "size", "train_on", "epochs", "lr")},
    }
    for key in ("auc_crop", "bacc_crop", "auc_pi_mask", "bacc_pi_mask"):
        vals = [f[key] for f in folds]
        summary[key + "_mean"] = round(float(np.mean(vals)), 4)
        summary[key + "_worst"] = round(float(np.min(vals)), 4)
    summary["worst_condition_pi_mask"] = min(folds, key=lambda f: f["auc_pi_mask"])["held_out"]
    summary["fit_s_total"] = round(sum(f["fit_s"] for f in folds), 1)
    return summary


CONFIGS = [
    ("lite0-96-crops", "lite0", 96, "ds"),
    ("lite0-96-pimask", "lite0", 96, "served"),
    ("lite0-96-both", "lite0", 96, "both"),
    ("lite0-128-pimask", "lite0", 128, "served"),
    ("lite0-160-pimask", "lite0", 160, "served"),
    ("lite1-128-pimask", "lite1", 128, "served"),
    ("lite2-160-pimask", "lite2", 160, "served"),
    ("lite0-224-pimask", "lite0", 224, "served"),
    ("lite2-224-pimask", "lite2", 224, "served"),
]

if __name__ == "__main__":
    budget = float(sys.argv[1]) if len(sys.argv) > 1 else 1e9
    only = sys.argv[2].split(",") if len(sys.argv) > 2 else None
    seeds = [int(s) for s in sys.argv[3].split(",")] if len(sys.argv) > 3 else [0]
    start = time.time()
    print(
        json.dumps({"device": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu", "torch": torch.__version__}),
        flush=True,
    )
    with (
        open(os.path.join(out_dir, f"folds-{os.environ.get('HELD', 'all')}.jsonl"), "a") as log,
        open(os.devnull, "w") as summ,
    ):
        for seed in seeds:
            for name, backbone, size, train_on in CONFIGS:
                if only and name not in only:
                    continue
                if time.time() - start > budget:
                    print("budget spent, stopping before", name, flush=True)
                    break
                cfg = {"name": name, "backbone": backbone, "size": size, "train_on": train_on, "epochs": 15, "lr": 5e-4}
                s = run(cfg, seed, log)
                summ.write(json.dumps(s) + "\n")
                summ.flush()
                print(json.dumps(s), flush=True)
