"""Builds the files of the SST-2 comparison (README, "SST-2-trained sentiment on full sentences").

    python scripts/sst2-eval-sets.py OUT_DIR [--shared ../shared] [--sample 12000] [--seed 1]

Writes, as TSVs with the header `sentence<TAB>label` (label 0 = negative, 1 = positive, as SST-2):
- `sst2_sample.tsv`: a seeded random sample of `--sample` rows of SST-2's `train.tsv` (0: all rows,
  in file order), the training set;
- `uci_test.tsv`: the 302 sentences of `uci-mtl/test.tsv`, sentiment only;
- `uci_all.tsv`: all 3,000 sentences of `uci-mtl` (train, dev and test), sentiment only. They are
  full review sentences from three other domains that SST-2 training never sees; SST-2's own dev
  split is held out of `../shared` and its README forbids building one from its training rows.
"""
import argparse, csv, os, random


def write(path, rows):
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("sentence\tlabel\n")
        for text, label in rows:
            f.write(f"{text}\t{label}\n")
    print(f"{path}: {len(rows)} rows")


def uci(shared, splits):
    rows = []
    for split in splits:
        with open(os.path.join(shared, "data", "uci-mtl", f"{split}.tsv"), encoding="utf-8", newline="") as f:
            lines = f.read().split("\n")
        header = lines[0].split("\t")
        text, sentiment = header.index("text"), header.index("sentiment")
        for line in filter(None, lines[1:]):
            fields = line.split("\t")
            rows.append((fields[text], {"negative": 0, "positive": 1}[fields[sentiment]]))
    return rows


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out"); p.add_argument("--shared", default="../shared")
    p.add_argument("--sample", type=int, default=12000); p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.shared, "data", "sst2", "train.tsv"), encoding="utf-8", newline="") as f:
        sst = [(r["sentence"], int(r["label"])) for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    if a.sample:
        sst = random.Random(a.seed).sample(sst, a.sample)
    write(os.path.join(a.out, "sst2_sample.tsv"), sst)
    write(os.path.join(a.out, "uci_test.tsv"), uci(a.shared, ["test"]))
    write(os.path.join(a.out, "uci_all.tsv"), uci(a.shared, ["train", "dev", "test"]))


if __name__ == "__main__":
    main()
