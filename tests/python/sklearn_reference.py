"""scikit-learn's fit of the same objective on the same split as a Lockstep run, for the tests
of the classic models (tests/classic_sklearn.rs).

    sklearn_reference.py SPLIT_DIR --model logistic|linear --l2 L2 [--class-weight balanced]
                         [--lockstep MODEL.safetensors] [--fpr 0.1]
    sklearn_reference.py SPLIT_DIR --model kmeans|pca --lockstep MODEL.safetensors

SPLIT_DIR is what `lockstep split` wrote (train.parquet, test.parquet, split.json). The penalty
maps as docs/models.md says: Lockstep minimises the mean loss plus (l2 / 2) |w|^2 (bias not
penalised), so
  - logistic: LogisticRegression(C = 1 / (n * l2)), scikit-learn minimising
    C * sum_i s_i loss_i + |w|^2 / 2 (s_i the class weight of row i);
  - linear:   Ridge(alpha = n * l2 / 2), scikit-learn minimising |y - Xw - b|^2 + alpha |w|^2,
    where Lockstep's mean squared error has no factor 1/2;
n is the number of training rows. Both are fitted far past Lockstep's tolerance (lbfgs with
tol 1e-10 / an exact Cholesky solve) in float64.

Prints one JSON object: "sklearn" and, with --lockstep, "lockstep" (the weights of that model
file scored on the same held-out rows): coef, intercept, auc (binary) or r2 (linear), and for
binary tasks recall at the false-positive rate --fpr ("recall_at_fpr") and the recall and
false-positive rate at probability 0.5 ("recall_at_half", "fpr_at_half"); then "coef_rel" = |w_l - w_s| / |w_s| and
"coef_max_rel" = max_i |w_l,i - w_s,i| / max_i |w_s,i|.

kmeans: scikit-learn's KMeans(n_init=1, algorithm="lloyd", tol=0) from the model's own start
(`kmeans.init`), against the inertia of the model's final centres on the same training rows:
"inertia_rel" = |inertia_l - inertia_s| / inertia_s. pca: PCA(svd_solver="full") with as many
components, "explained_variance_rel" = max_i |ev_l,i - ev_s,i| / ev_s,i, and the cosine of each
pair of components ("component_cos_min", 1 when they agree up to sign).
"""

import argparse
import json
import sys

import numpy as np
import pyarrow.parquet as pq
from safetensors.numpy import load_file
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import r2_score, roc_auc_score, roc_curve


def load(path, label):
    table = pq.read_table(path)
    x = np.column_stack(
        [table.column(c).to_numpy().astype(np.float64) for c in table.column_names if c != label]
    )
    y = table.column(label).to_numpy().astype(np.float64)
    return x, y


def recall_at_fpr(y, score, fpr):
    """The true-positive rate of the threshold with the largest rate whose false-positive rate is
    at most `fpr` (a step of the ROC curve, no interpolation)."""
    f, t, _ = roc_curve(y, score)
    return float(t[f <= fpr + 1e-12].max())


def scores(model, coef, intercept, x, y, fpr):
    z = x @ coef + intercept
    if model == "linear":
        return {"r2": float(r2_score(y, z))}
    pos = y == 1
    return {"auc": float(roc_auc_score(y, z)), "recall_at_fpr": recall_at_fpr(y, z, fpr),
            "recall_at_half": float((z[pos] >= 0).mean()),
            "fpr_at_half": float((z[~pos] >= 0).mean())}


def inertia(x, centres):
    d = ((x[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
    return float(d.min(axis=1).sum())


def classic(a, x):
    t = load_file(a.lockstep)
    if a.model == "kmeans":
        init = t["kmeans.init"].astype(np.float64)
        mine = t["kmeans.centres"].astype(np.float64)
        sk = KMeans(n_clusters=init.shape[0], init=init, n_init=1, max_iter=1000, tol=0.0,
                    algorithm="lloyd").fit(x)
        own = inertia(x, mine)
        return {"sklearn": {"inertia": float(sk.inertia_), "n_iter": int(sk.n_iter_)},
                "lockstep": {"inertia": own},
                "inertia_rel": abs(own - sk.inertia_) / sk.inertia_}
    ev = t["pca.explained_variance"].astype(np.float64)
    comps = t["pca.components"].astype(np.float64)
    sk = PCA(n_components=ev.shape[0], svd_solver="full").fit(x)
    cos = np.abs((comps * sk.components_).sum(axis=1)) / (
        np.linalg.norm(comps, axis=1) * np.linalg.norm(sk.components_, axis=1))
    return {"sklearn": {"explained_variance": sk.explained_variance_.tolist()},
            "lockstep": {"explained_variance": ev.tolist()},
            "explained_variance_rel": float((np.abs(ev - sk.explained_variance_)
                                             / sk.explained_variance_).max()),
            "component_cos_min": float(cos.min())}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("split")
    p.add_argument("--model", choices=["logistic", "linear", "kmeans", "pca"], required=True)
    p.add_argument("--l2", type=float, default=0.0)
    p.add_argument("--class-weight", choices=["balanced"], default=None)
    p.add_argument("--lockstep", default=None)
    p.add_argument("--fpr", type=float, default=0.1)
    a = p.parse_args()
    meta = json.load(open(f"{a.split}/split.json"))
    label = meta["label"]
    x, y = load(f"{a.split}/train.parquet", label)
    xt, yt = load(f"{a.split}/test.parquet", label)
    n = x.shape[0]
    if a.model in ("kmeans", "pca"):
        print(json.dumps({"train_rows": n, **classic(a, x)}))
        return
    if a.l2 <= 0:
        sys.exit("--l2 must be positive (the mapping to C and alpha needs a penalty)")
    if a.model == "logistic":
        if meta["task"] != "binary":
            sys.exit(f"--model logistic compares binary tasks; {a.split} is {meta['task']}")
        sk = LogisticRegression(
            C=1.0 / (n * a.l2), solver="lbfgs", tol=1e-10, max_iter=100_000,
            class_weight=a.class_weight,
        ).fit(x, y)
        coef, intercept = sk.coef_.ravel(), float(sk.intercept_[0])
        extra = {"C": 1.0 / (n * a.l2), "n_iter": int(sk.n_iter_[0])}
    else:
        sk = Ridge(alpha=n * a.l2 / 2.0, solver="cholesky").fit(x, y)
        coef, intercept = sk.coef_.ravel(), float(sk.intercept_)
        extra = {"alpha": n * a.l2 / 2.0}
    out = {
        "train_rows": n,
        "test_rows": xt.shape[0],
        "sklearn": {"coef": coef.tolist(), "intercept": intercept, **extra,
                    **scores(a.model, coef, intercept, xt, yt, a.fpr)},
    }
    if a.lockstep:
        t = load_file(a.lockstep)
        w = t["dense0.weight"].astype(np.float64).ravel()
        b = float(t["dense0.bias"].astype(np.float64).ravel()[0])
        out["lockstep"] = {"coef": w.tolist(), "intercept": b,
                           **scores(a.model, w, b, xt, yt, a.fpr)}
        out["coef_rel"] = float(np.linalg.norm(w - coef) / np.linalg.norm(coef))
        out["coef_max_rel"] = float(np.abs(w - coef).max() / np.abs(coef).max())
        out["intercept_diff"] = abs(b - intercept)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
