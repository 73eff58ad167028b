#!/usr/bin/env python3
"""The single-task training recipe of `mtl train` in PyTorch, for side-by-side accuracy figures.

all-MiniLM-L6-v2 (transformers' BertModel, dropout 0.1, no pooler) -> masked mean pooling ->
Linear(384, 192) -> ReLU -> Dropout(p) -> Linear(192, classes); mean cross-entropy (optionally
label-smoothed); AdamW (weight decay 0.01 except biases and LayerNorm weights) with mtl's rate
groups: the top encoder layer at --lr, each layer below times --layer-decay, the embeddings once
more, the head at --head-lr (default --lr); Hugging Face's linear schedule as `mtl train` has
it (warmup from 0 over ceil(share x steps) updates, then linear decay to 0); gradient norm
clipped at 1.0; batches drawn at random from a seeded shuffle each epoch. Prints one JSON line:
the seed, the steps and each test file's accuracy.

    python scripts/pytorch_train.py --train TRAIN.tsv --test TEST.tsv --label sentiment \
        [--model models/all-MiniLM-L6-v2] [--epochs 1] [--lr 5e-5] [--batch 32] [--seed 1] \
        [--warmup 0.1] [--head-dropout 0.1] [--head-lr LR] [--layer-decay 1] [--label-smoothing 0]

--test may be repeated (each file is scored on its own). The files are TSVs with a header, the
text in column `text` or `sentence`, the label in `--label`. Needs torch and transformers
(`pip install torch transformers`); runs on 2 threads.
"""
import argparse, csv, json, math, random, sys

import torch, torch.nn as nn
from transformers import BertModel, BertTokenizerFast, get_linear_schedule_with_warmup


def read(path, label):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    text = "text" if "text" in rows[0] else "sentence"
    return [r[text].strip() for r in rows], [r[label] for r in rows]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--train", required=True); p.add_argument("--test", required=True, action="append")
    p.add_argument("--label", required=True); p.add_argument("--model", default="models/all-MiniLM-L6-v2")
    p.add_argument("--epochs", type=int, default=1); p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch", type=int, default=32); p.add_argument("--seed", type=int, default=1)
    p.add_argument("--warmup", type=float, default=0.1); p.add_argument("--head-dropout", type=float, default=0.1)
    p.add_argument("--head-lr", type=float); p.add_argument("--layer-decay", type=float, default=1.0)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    a = p.parse_args()
    torch.set_num_threads(2); torch.manual_seed(a.seed); random.seed(a.seed)
    texts, labels = read(a.train, a.label)
    classes = sorted(set(labels)); y = [classes.index(l) for l in labels]
    tests = {path: read(path, a.label) for path in a.test}
    for path, (_, test_labels) in tests.items():
        unknown = set(test_labels) - set(classes)
        if unknown:
            sys.exit(f"{path}: labels {sorted(unknown)} are not in {a.train}")
    tok = BertTokenizerFast.from_pretrained(a.model)
    enc = BertModel.from_pretrained(a.model, add_pooling_layer=False)
    dim = enc.config.hidden_size
    head = nn.Sequential(nn.Linear(dim, dim // 2), nn.ReLU(), nn.Dropout(a.head_dropout), nn.Linear(dim // 2, len(classes)))
    params = list(enc.named_parameters()) + [("head." + n, q) for n, q in head.named_parameters()]
    no_decay = lambda n: n.endswith(".bias") or "LayerNorm" in n
    layers = enc.config.num_hidden_layers

    def rate(n):
        if n.startswith("head."):
            return a.head_lr if a.head_lr is not None else a.lr
        if n.startswith("embeddings."):
            return a.lr * a.layer_decay ** layers
        if n.startswith("encoder.layer."):
            return a.lr * a.layer_decay ** (layers - 1 - int(n.split(".")[2]))
        return a.lr

    groups = {}
    for n, q in params:
        groups.setdefault((rate(n), 0.0 if no_decay(n) else 0.01), []).append(q)
    opt = torch.optim.AdamW([{"params": qs, "lr": lr, "weight_decay": wd} for (lr, wd), qs in groups.items()])
    steps = a.epochs * ((len(texts) + a.batch - 1) // a.batch); warm = math.ceil(a.warmup * steps)
    sched = get_linear_schedule_with_warmup(opt, warm, steps)

    def embed(batch):
        x = tok(batch, padding=True, truncation=True, max_length=256, return_tensors="pt")
        h = enc(**x).last_hidden_state
        m = x["attention_mask"].unsqueeze(-1).float()
        return (h * m).sum(1) / m.sum(1).clamp(min=1e-9)

    enc.train(); head.train()
    for _ in range(a.epochs):
        order = list(range(len(texts))); random.shuffle(order)
        for i in range(0, len(order), a.batch):
            rows = order[i:i + a.batch]
            logits = head(embed([texts[r] for r in rows]))
            loss = nn.functional.cross_entropy(logits, torch.tensor([y[r] for r in rows]), label_smoothing=a.label_smoothing)
            opt.zero_grad(); loss.backward()
            torch.nn.utils.clip_grad_norm_([q for _, q in params], 1.0)
            opt.step(); sched.step()
    enc.eval(); head.eval()
    print(json.dumps({"seed": a.seed, "steps": steps,
                      "test_accuracy": {path: accuracy(head, embed, classes, *rows) for path, rows in tests.items()}}))


def accuracy(head, embed, classes, texts, labels):
    right = 0
    with torch.no_grad():
        for i in range(0, len(texts), 64):
            pred = head(embed(texts[i:i + 64])).argmax(1).tolist()
            right += sum(classes[k] == l for k, l in zip(pred, labels[i:i + 64]))
    return right / len(texts)


if __name__ == "__main__":
    main()
