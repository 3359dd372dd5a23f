"""Writes 300 Fashion-MNIST training images (100 each of trouser, sneaker, bag) as PNGs in class
subfolders: the "user's folder" of the train_steps proof. Reads Debian's dataset-fashion-mnist
IDX files (/usr/share/datasets/fashion-mnist) with numpy and gzip.

    python tries/make_fashion_folder.py OUT_DIR
"""
import gzip
import os
import sys

import numpy as np
from PIL import Image

ROOT = "/usr/share/datasets/fashion-mnist"
CLASSES = {1: "trouser", 7: "sneaker", 8: "bag"}
PER_CLASS = 100


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def main(out):
    images = idx(os.path.join(ROOT, "train-images-idx3-ubyte.gz"))
    labels = idx(os.path.join(ROOT, "train-labels-idx1-ubyte.gz"))
    for label, name in CLASSES.items():
        folder = os.path.join(out, name)
        os.makedirs(folder, exist_ok=True)
        for i, index in enumerate(np.flatnonzero(labels == label)[:PER_CLASS]):
            Image.fromarray(images[index], "L").save(os.path.join(folder, f"{i:03d}.png"))
    print(f"wrote {PER_CLASS * len(CLASSES)} images to {out}")


if __name__ == "__main__":
    main(sys.argv[1])
