"""FID of each sampler at the held-out split's count (180): the held-out row's FID is at 180
images, the samplers' at 500, and FID's small-sample bias favours the larger count. Reads the
evaluate stage's features.npz; prints, per sampler, the mean and the 5-95 % range of the FID of
20 random 180-image subsets of its samples (against the train features, as the evaluate stage)."""
import sys

import numpy as np

from kdiff import metrics


def stats(x):
    x = np.asarray(x, np.float64)
    return x.mean(0), np.cov(x, rowvar=False)


for run in sys.argv[1:]:
    f = np.load(f"{run}/evaluate/metrics/features.npz")
    mu, sigma = stats(f["train"])
    n = len(f["eval"])
    rng = np.random.default_rng(0)
    line = [f"{run.split('/')[-1]}: held-out {float(metrics.frechet_distance(mu, sigma, *stats(f['eval']))):.2f} (n={n})"]
    for key in f.files:
        if key.startswith("samples/"):
            x = f[key]
            fids = [float(metrics.frechet_distance(mu, sigma, *stats(x[rng.choice(len(x), n, replace=False)])))
                    for _ in range(20)]
            line.append(f"{key[8:]}@{n} {np.mean(fids):.2f} [{np.percentile(fids, 5):.2f}, {np.percentile(fids, 95):.2f}]")
    print("; ".join(line))
