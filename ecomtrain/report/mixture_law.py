"""The mixture law: each held-out task's score (or loss) as a function of the training
mixture and the LoRA rank, fitted on a sweep's own finished trials, and the mixture it
predicts best at each rank.

The inputs are a trial's realised shares (trials.csv's `mix/<task>`, or `mix_cap/<capability>`
for a sweep of capability mixtures) and z = log2(rank) when the trials have several ranks.
Each target (a task's `task/<name>` score, or its `eval_loss/<name>`, far less noisy) is
fitted by each family:

- "exp", the data mixing law: y = c + k exp(sum_j a_j r_j), fitted per rank (scipy's least
  squares from the best of a coarse search over its exponent, with its Jacobian);
- "gp", a Gaussian process (scikit-learn; an RBF kernel with a length per input, plus noise);
- "linear", y = b0 + sum_j b_j r_j + g z: the reference a curved law must beat.

The objective is the targets' sum with ShopBench's weights (tasks averaged into tracks,
tracks into the score; for losses, their negative), so a law of monotone per-task curves can
still put its best mixture inside the simplex. Families are compared by cross-validation over
trials, every trial of a mixture left out together (its ranks and seeds), with the Spearman
correlation and RMSE of the out-of-fold objective and bootstrap 95 % intervals over trials;
the family of lowest RMSE proposes. A proposal, per rank, maximises the predicted objective
on the simplex (optionally less kl * KL(mixture || prior), the prior being the stratified
mixture) within the range of shares the trials tried (no proposal where no trial went):
the best of Dirichlet candidates, blends of the tried mixtures and the tried mixtures
themselves, polished by Nelder-Mead over softmax weights. Its 95 % prediction interval, for
one new trial, is 1.96 * sqrt(sd_boot^2 + rmse_cv^2): the spread of the prediction over
refits on bootstrap resamples of the mixtures, and the cross-validated error.

Too few trials for a law's parameters, or a fit that does not converge, is said in
`LawFit.message`; there is then no proposal, and nothing is raised.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import optimize, stats
from threadpoolctl import threadpool_limits

from ecomtrain.data.mixture import STRATIFIED
from ecomtrain.tasks import FAMILIES

FAMILY_NAMES = ("exp", "gp", "linear")
START_SCALE = 15.0  # the exp law's coarse search: coefficients of the shares in [-15, 15]
LEVEL = 0.95
Z = stats.norm.ppf(0.5 + LEVEL / 2)


def law_needs(k: int) -> int:
    """Mixtures the law needs for K shares: the exp law's K + 1 parameters per target (a
    level, a scale and K - 1 directions on the simplex) and one more, to leave a residual."""
    return k + 2


# --- the table -----------------------------------------------------------------------------------


@dataclass
class Table:
    """The scored trials as the law sees them."""

    names: list[str]  # the shares: tasks, or capabilities
    shares: np.ndarray  # [n, K] realised shares, rows summing to 1
    rank: np.ndarray  # [n]
    targets: list[str]  # per-task columns fitted
    y: np.ndarray  # [n, T] their values
    weights: np.ndarray  # [T] the objective = y @ weights (higher is better)
    mixture: list[str]  # each trial's mixture id (cross-validation groups)
    trial: list[str]

    @property
    def objective(self) -> np.ndarray:
        return self.y @ self.weights

    def inputs(self, shares: np.ndarray, rank) -> np.ndarray:
        return inputs(shares, rank, len(set(self.rank.tolist())) > 1)


def inputs(shares: np.ndarray, rank, ranked: bool) -> np.ndarray:
    """The law's inputs: the shares, and log2(rank) when the trials have several ranks
    (`ranked`); `rank` is one rank or one per row."""
    shares = np.atleast_2d(np.asarray(shares, float))
    if not ranked:
        return shares
    z = np.broadcast_to(np.log2(np.asarray(rank, float)), (len(shares),))
    return np.column_stack([shares, z])


def shopbench_weights(tasks: list[str]) -> np.ndarray:
    """Each task's weight in the overall score: 1 / (tracks * tasks of its track), by the
    built-in families' capabilities (a task of the user's own is a track of its own)."""
    track = [FAMILIES[t].capability if t in FAMILIES else f"own:{t}" for t in tasks]
    n_tracks = len(set(track))
    return np.array([1.0 / (n_tracks * track.count(x)) for x in track])


def table(rows: list[dict], target: str = "score", over: str | None = None) -> Table:
    """The law's table from typed trials (trials.csv's rows): the scored trials with their
    realised shares (`over`: "tasks" or "capabilities"; None: the rows' `mixture_over`, else
    tasks) and their per-task scores (`target` "score": the sweep metric's `task/*`, or
    `extra/task/*` for extra/*) or per-task losses (`target` "loss": `eval_loss/*`)."""
    ok = [r for r in rows if r.get("score") is not None and not r.get("error")]
    over = over or next((r["mixture_over"] for r in ok if r.get("mixture_over")), "tasks")
    prefix = "mix_cap/" if over == "capabilities" else "mix/"
    names = sorted({k[len(prefix) :] for r in ok for k, v in r.items() if k.startswith(prefix)})
    names = [n for n in names if any((r.get(prefix + n) or 0) > 0 for r in ok)]
    metric = (ok[0].get("metric") or "score") if ok else "score"
    if target == "loss":
        column = "eval_loss/"
    else:
        column = "extra/task/" if metric.startswith("extra/") else "task/"
    targets = sorted({k for r in ok for k in r if k.startswith(column)})
    if target != "loss" and "track/" in metric:  # one capability's tasks only
        track = metric.rpartition("track/")[2]
        targets = [t for t in targets if _capability(t[len(column) :]) == track]
    full = [r for r in ok if all(r.get(t) is not None for t in targets)]
    shares = np.array([[r.get(prefix + n) or 0.0 for n in names] for r in full], float)
    if len(shares):
        shares = shares / np.maximum(shares.sum(axis=1, keepdims=True), 1e-12)
    sign = -1.0 if target == "loss" else 1.0
    return Table(
        names=names,
        shares=shares.reshape(len(full), len(names)),
        rank=np.array([r["rank"] for r in full], float),
        targets=targets,
        y=np.array([[r[t] for t in targets] for r in full], float).reshape(len(full), len(targets)),
        weights=sign * shopbench_weights([t[len(column) :] for t in targets]),
        mixture=[r.get("mixture") or _shares_key(s) for r, s in zip(full, shares, strict=True)],
        trial=[r["trial"] for r in full],
    )


def _capability(task: str) -> str:
    return FAMILIES[task].capability if task in FAMILIES else ""


def _shares_key(shares: np.ndarray) -> str:
    return " ".join(f"{x:.3f}" for x in shares)


# --- the families --------------------------------------------------------------------------------


class NotConverged(RuntimeError):
    """A fit that did not converge; the message says which and why."""


class ExpLaw:
    """y = c + k exp(sum_j a_j r_j), per target and per rank (the data mixing law; a rank
    changes how fast a share pays, which one term in z could not say). The shares sum to 1,
    so the last one's coefficient is folded into k: the inputs are r_1 .. r_{K-1}, and a
    small ridge on their coefficients keeps flat directions at 0. An exponential fitted on a
    few mixtures can explode off them, so a prediction is held within the targets' fitted
    range widened by its own span on each side."""

    name = "exp"

    def __init__(self, k: int, max_evals: int = 2000, ridge: float = 1e-6):
        self.k, self.max_evals, self.ridge = k, max_evals, ridge

    def _split(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(r_1 .. r_{K-1}, each row's rank input: z, or 0 with one rank)."""
        z = x[:, self.k] if x.shape[1] > self.k else np.zeros(len(x))
        return x[:, : self.k - 1], z

    def fit(self, x: np.ndarray, y: np.ndarray) -> ExpLaw:
        r, z = self._split(x)
        self.coef, self.bounds = {}, {}
        for level in np.unique(z):
            at = z == level
            mixtures = len(np.unique(np.round(r[at], 6), axis=0))
            if mixtures < law_needs(self.k):
                raise NotConverged(
                    f"exp: {mixtures} mixtures at rank {2**level:g}, fewer than the "
                    f"{law_needs(self.k)} it needs"
                )
            self.coef[level] = [self._fit_one(r[at], y[at, j]) for j in range(y.shape[1])]
            span = np.ptp(y[at], axis=0)
            self.bounds[level] = (y[at].min(axis=0) - span, y[at].max(axis=0) + span)
        return self

    def _fit_one(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Least squares from the best starts of a coarse search: for given coefficients a,
        c and k are a straight line's, so many a are scored at once in closed form."""
        n, d = x.shape
        if np.ptp(y) == 0:
            return np.r_[y[0], 0.0, np.zeros(d)]
        rng = np.random.default_rng(0)
        axes = np.vstack([s * np.eye(d) for s in (-10, -3, -1, 1, 3, 10)])
        a = np.vstack([np.zeros((1, d)), axes, rng.uniform(-START_SCALE, START_SCALE, (256, d))])
        e = np.exp(np.clip(a @ x.T, -50, 50))  # [m, n]
        e_mean, y_mean = e.mean(axis=1, keepdims=True), y.mean()
        var = ((e - e_mean) ** 2).sum(axis=1)
        k = np.where(
            var > 1e-12, ((e - e_mean) * (y - y_mean)).sum(axis=1) / np.maximum(var, 1e-12), 0
        )
        c = y_mean - k * e_mean[:, 0]
        rss = ((y - c[:, None] - k[:, None] * e) ** 2).sum(axis=1)
        ridge = math.sqrt(self.ridge) * np.eye(d)

        def residual(p):
            return np.r_[self._eval(p, x) - y, ridge @ p[2:]]

        def jacobian(p):
            e = np.exp(np.clip(x @ p[2:], -50, 50))
            top = np.column_stack([np.ones(n), e, (p[1] * e)[:, None] * x])
            return np.vstack([top, np.column_stack([np.zeros((d, 2)), ridge])])

        best, why = None, ""
        for i in np.argsort(rss)[:3]:
            p0 = np.r_[c[i], k[i], a[i]]
            with np.errstate(over="ignore", invalid="ignore"):
                fit = optimize.least_squares(
                    residual, p0, jac=jacobian, method="lm", max_nfev=self.max_evals
                )
            if fit.status <= 0 or not np.all(np.isfinite(fit.x)):
                why = fit.message
                continue
            if best is None or fit.cost < best.cost:
                best = fit
        if best is None:
            raise NotConverged(f"exp: least squares did not converge ({why})")
        return best.x

    @staticmethod
    def _eval(p: np.ndarray, x: np.ndarray) -> np.ndarray:
        return p[0] + p[1] * np.exp(np.clip(x @ p[2:], -50, 50))

    def predict(self, x: np.ndarray) -> np.ndarray:
        r, z = self._split(x)
        levels = np.array(sorted(self.coef))
        near = levels[np.argmin(np.abs(z[:, None] - levels[None]), axis=1)]  # unseen: nearest
        out = np.empty((len(x), len(next(iter(self.coef.values())))))
        for level in np.unique(near):
            at = near == level
            out[at] = np.column_stack([self._eval(p, r[at]) for p in self.coef[level]])
            out[at] = np.clip(out[at], *self.bounds[level])
        return out


class Linear:
    """y = b0 + sum_j b_j r_j + g z, per target (least squares, a small ridge)."""

    name = "linear"

    def __init__(self, k: int, ridge: float = 1e-6):
        self.k, self.ridge = k, ridge

    def _design(self, x: np.ndarray) -> np.ndarray:
        return np.column_stack([np.ones(len(x)), x[:, 1:]])  # r_1 is 1 - the others

    def fit(self, x: np.ndarray, y: np.ndarray) -> Linear:
        a = self._design(x)
        self.coef = np.linalg.solve(a.T @ a + self.ridge * np.eye(a.shape[1]), a.T @ y)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self._design(x) @ self.coef


class GaussianProcess:
    """A Gaussian process per target: a constant times an RBF kernel with a length per
    input, plus white noise; targets standardised. `kernels`: where its kernels' fit starts
    (a fit on all trials, for its folds and refits), else from lengths of 0.5 with a
    restart."""

    name = "gp"

    def __init__(self, k: int, kernels: list | None = None):
        self.k, self.kernels = k, kernels

    def fit(self, x: np.ndarray, y: np.ndarray) -> GaussianProcess:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

        self.models = []
        for j in range(y.shape[1]):
            if self.kernels:
                kernel = self.kernels[j]
            else:
                lengths = RBF(np.full(x.shape[1], 0.5), (1e-2, 1e2))
                kernel = ConstantKernel(1.0, (1e-3, 1e3)) * lengths + WhiteKernel(1e-2, (1e-6, 1))
            gp = GaussianProcessRegressor(
                kernel,
                normalize_y=True,
                n_restarts_optimizer=0 if self.kernels else 1,
                random_state=0,
            )
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                gp.fit(x, y[:, j])
            failed = [w for w in caught if "failed to converge" in str(w.message)]
            if failed:
                raise NotConverged(f"gp: the kernel's fit did not converge ({failed[0].message})")
            self.models.append(gp)
        return self

    def refit(self) -> GaussianProcess:
        """A fresh process whose fit starts from this one's kernels."""
        return GaussianProcess(self.k, [m.kernel_ for m in self.models])

    def predict(self, x: np.ndarray, return_std: bool = False):
        out = [m.predict(x, return_std=return_std) for m in self.models]
        if not return_std:
            return np.column_stack(out)
        return np.column_stack([m for m, _ in out]), np.column_stack([s for _, s in out])


def family(name: str, k: int, max_evals: int = 2000):
    """A fresh model of family `name` for K shares."""
    if name == "exp":
        return ExpLaw(k, max_evals)
    if name == "gp":
        return GaussianProcess(k)
    if name == "linear":
        return Linear(k)
    raise ValueError(f"unknown law family {name!r} (one of {', '.join(FAMILY_NAMES)})")


def fresh(model, name: str, k: int, max_evals: int = 2000):
    """A new model of `model`'s family for another fit (a fold, a refit): a Gaussian process
    starts from `model`'s kernels, the others from scratch."""
    return model.refit() if hasattr(model, "refit") else family(name, k, max_evals)


# --- cross-validation -----------------------------------------------------------------------------


@dataclass
class FamilyFit:
    """One family's cross-validation: out-of-fold objective against observed."""

    name: str
    converged: bool
    message: str = ""
    spearman: float | None = None
    spearman_ci: list[float] | None = None
    rmse: float | None = None
    rmse_ci: list[float] | None = None
    predicted: list[float] = field(default_factory=list)  # out of fold, per trial


def groups_of(t: Table) -> np.ndarray:
    return np.unique(t.mixture, return_inverse=True)[1]


def cross_validate(t: Table, name: str, folds: int = 30, boot: int = 1000, **kw) -> FamilyFit:
    """Out-of-fold objective of family `name`, every trial of a mixture left out together
    (one mixture per fold up to `folds` mixtures, else `folds` groups of them), with the
    Spearman correlation and RMSE against the observed and bootstrap 95 % intervals."""
    x, group = t.inputs(t.shares, t.rank), groups_of(t)
    n_groups = group.max() + 1
    fold = (
        group
        if n_groups <= folds
        else np.random.default_rng(0).permutation(n_groups)[group] % folds
    )
    out = np.full(len(x), np.nan)
    try:
        whole = family(name, len(t.names), **kw).fit(x, t.y)
        for f in np.unique(fold):
            test = fold == f
            model = fresh(whole, name, len(t.names), **kw).fit(x[~test], t.y[~test])
            out[test] = model.predict(x[test]) @ t.weights
    except NotConverged as e:
        return FamilyFit(name, False, str(e))
    if not np.all(np.isfinite(out)):
        return FamilyFit(name, False, f"{name}: a prediction out of fold is not finite")
    obs = t.objective
    rho, rmse = _spearman(out[None], obs[None])[0], float(np.sqrt(np.mean((out - obs) ** 2)))
    idx = np.random.default_rng(1).integers(0, len(obs), size=(boot, len(obs)))
    rhos = _spearman(out[idx], obs[idx])
    rmses = np.sqrt(np.mean((out[idx] - obs[idx]) ** 2, axis=1))
    return FamilyFit(
        name,
        True,
        spearman=float(rho),
        spearman_ci=_interval(rhos),
        rmse=rmse,
        rmse_ci=_interval(rmses),
        predicted=out.tolist(),
    )


def _spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Spearman correlation of [B, n] arrays (NaN where a row is constant)."""
    ra, rb = stats.rankdata(a, axis=1), stats.rankdata(b, axis=1)
    ra, rb = ra - ra.mean(axis=1, keepdims=True), rb - rb.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (ra * rb).sum(axis=1) / np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))


def _interval(values: np.ndarray) -> list[float] | None:
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    tail = (1 - LEVEL) / 2 * 100
    return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]


# --- the proposal ---------------------------------------------------------------------------------


@dataclass
class Proposal:
    """The predicted-best mixture at one rank."""

    rank: int
    shares: dict[str, float]
    predicted: float
    interval: list[float]
    kl: float  # KL(proposal || prior), nats
    best_observed: dict  # the best tried mixture at this rank: mixture, shares, mean, trials
    stratified: dict | None  # the stratified mixture here: observed mean, predicted


@dataclass
class LawFit:
    """What the law says about a sweep: its families' cross-validation, the chosen one, and a
    proposal per rank, or a plain message why there is none."""

    target: str
    names: list[str]
    ranks: list[int]
    n_trials: int
    n_mixtures: int
    families: list[FamilyFit] = field(default_factory=list)
    chosen: str | None = None
    proposals: list[Proposal] = field(default_factory=list)
    message: str = ""
    caution: str = ""  # the chosen law does not rank the trials out of sample
    prior: dict[str, float] = field(default_factory=dict)
    kl_weight: float = 0.0
    observed: list[dict] = field(default_factory=list)  # trial, mixture, rank, objective

    @property
    def ok(self) -> bool:
        return bool(self.proposals)

    def to_dict(self) -> dict:
        return asdict(self)


def fit_law(
    rows: list[dict],
    target: str = "score",
    over: str | None = None,
    families: tuple[str, ...] = FAMILY_NAMES,
    kl: float = 0.0,
    boot: int = 30,
    max_evals: int = 2000,
    seed: int = 0,
) -> LawFit:
    """The law fitted on typed trials (see `table`), its families cross-validated, and the
    chosen one's proposal per rank (`kl`: the weight of KL(mixture || stratified prior) taken
    off the predicted objective; `boot`: refits on bootstrap resamples of the mixtures for
    the prediction interval; `max_evals`: the exp law's function evaluations per start)."""
    with threadpool_limits(1):  # small matrices: threads only contend
        return _fit_law(rows, target, over, families, kl, boot, max_evals, seed)


def _fit_law(rows, target, over, families, kl, boot, max_evals, seed) -> LawFit:
    t = table(rows, target, over)
    ranks = sorted({int(r) for r in t.rank})
    n_mix = len(set(t.mixture))
    out = LawFit(target, t.names, ranks, len(t.trial), n_mix, kl_weight=kl)
    k = len(t.names)
    d = k + (len(ranks) > 1)
    need_mix = law_needs(k)
    need_trials = need_mix + (d > k)  # and one more for the rank's term
    if k < 2 or not t.targets:
        out.message = (
            "no mixture to fit: the scored trials hold fewer than two tasks with a share"
            if k < 2
            else f"no per-task {target} columns in the trials"
        )
        return out
    if n_mix < need_mix or len(t.trial) < need_trials:
        out.message = (
            f"too few trials for the mixture law: {len(t.trial)} scored trials over {n_mix} "
            f"mixtures; a law of {k} shares{' and the rank' if d > k else ''} needs at least "
            f"{need_mix} mixtures and {need_trials} trials. No proposal."
        )
        return out
    out.observed = [
        {"trial": tr, "mixture": m, "rank": int(r), "objective": float(o)}
        for tr, m, r, o in zip(t.trial, t.mixture, t.rank, t.objective, strict=True)
    ]
    out.families = [cross_validate(t, f, max_evals=max_evals) for f in families]
    fitted = [f for f in out.families if f.converged and f.rmse is not None]
    if not fitted:
        why = "; ".join(f.message for f in out.families)
        out.message = f"no family of the mixture law converged ({why}). No proposal."
        return out
    chosen = min(fitted, key=lambda f: f.rmse)
    x = t.inputs(t.shares, t.rank)
    try:
        model = family(chosen.name, k, max_evals).fit(x, t.y)
    except NotConverged as e:
        out.message = f"the chosen family did not converge on every trial ({e}). No proposal."
        return out
    out.chosen = chosen.name
    out.caution = caution(chosen)
    out.prior = _prior(t)
    prior = np.array([out.prior[n] for n in t.names])
    rng = np.random.default_rng(seed)
    refits = _bootstrap_models(t, model, chosen.name, boot, max_evals, rng)
    for rank in ranks:
        out.proposals.append(_propose(t, model, refits, rank, prior, kl, chosen.rmse, rng))
    return out


def caution(chosen: FamilyFit) -> str:
    """A plain warning when the chosen family's out-of-fold predictions do not rank the
    trials better than chance (its CV Spearman's 95 % interval reaches 0), else ""."""
    if chosen.spearman_ci is not None and chosen.spearman_ci[0] > 0:
        return ""
    ci = (
        f"95 % interval [{chosen.spearman_ci[0]:.3f}, {chosen.spearman_ci[1]:.3f}]"
        if chosen.spearman_ci
        else "no interval"
    )
    return (
        f"the {chosen.name} law does not rank the trials better than chance with their mixture "
        f"left out (CV Spearman {chosen.spearman:.3f}, {ci}): its proposals are a guess, not a "
        "finding. Confirm them (sweep --confirm DIR) or run more mixtures before relying on them."
    )


def _prior(t: Table) -> dict[str, float]:
    """The stratified mixture's realised shares (uniform when the trials hold none)."""
    rows = [s for s, m in zip(t.shares, t.mixture, strict=True) if m == STRATIFIED]
    p = np.mean(rows, axis=0) if rows else np.full(len(t.names), 1.0 / len(t.names))
    return dict(zip(t.names, (p / p.sum()).tolist(), strict=True))


def _bootstrap_models(t: Table, model, name: str, boot: int, max_evals: int, rng) -> list:
    """Refits of `model` (family `name`) on bootstrap resamples of the mixtures (those that
    converge)."""
    group = groups_of(t)
    n_groups = group.max() + 1
    x = t.inputs(t.shares, t.rank)
    out = []
    for _ in range(boot):
        pick = rng.integers(0, n_groups, n_groups)
        idx = np.concatenate([np.flatnonzero(group == g) for g in pick])
        if len(np.unique(group[idx])) < law_needs(len(t.names)):
            continue
        try:
            out.append(fresh(model, name, len(t.names), max_evals).fit(x[idx], t.y[idx]))
        except (NotConverged, np.linalg.LinAlgError, ValueError):
            continue
    return out


def _propose(t: Table, model, refits: list, rank: int, prior, kl: float, rmse: float, rng):
    """The best mixture at `rank` by the model, with its prediction interval: within the
    range of shares the trials tried (each share between its smallest and largest tried
    value), since a law fitted on them says nothing it can be trusted on beyond."""
    k = len(t.names)
    low, high = t.shares.min(axis=0) - 1e-9, t.shares.max(axis=0) + 1e-9

    def value(shares: np.ndarray) -> np.ndarray:
        shares = np.atleast_2d(shares)
        pred = model.predict(t.inputs(shares, rank)) @ t.weights
        if kl:
            pred = pred - kl * _kl(shares, prior)
        inside = np.all((shares >= low) & (shares <= high), axis=1)
        return np.where(inside, pred, -np.inf)

    # flat draws on the simplex, and mixtures of the tried ones (inside the range by
    # construction, however narrow it is)
    between = rng.dirichlet(np.ones(len(t.shares)), 4000) @ t.shares
    candidates = np.vstack([rng.dirichlet(np.ones(k), 4000), between, t.shares, prior, np.eye(k)])
    scores = value(candidates)
    best_x, best_v = candidates[int(np.argmax(scores))], float(np.max(scores))
    for start in candidates[np.argsort(-scores)[:5]]:
        theta0 = np.log(np.maximum(start, 1e-6))
        res = optimize.minimize(
            lambda th: -value(_softmax(th))[0],
            theta0,
            method="Nelder-Mead",
            options={"maxiter": 400 * k, "xatol": 1e-5, "fatol": 1e-7},
        )
        if np.isfinite(res.fun) and -res.fun > best_v:
            best_x, best_v = _softmax(res.x), float(-res.fun)
    x_star = t.inputs(best_x[None], rank)
    predicted = float((model.predict(x_star) @ t.weights)[0])
    spread = [float((m.predict(x_star) @ t.weights)[0]) for m in refits]
    sd_fit = float(np.std(spread, ddof=1)) if len(spread) > 1 else 0.0
    half = Z * math.sqrt(sd_fit**2 + rmse**2)
    here = t.rank == rank
    means = {}
    for m in dict.fromkeys(np.array(t.mixture)[here].tolist()):
        sel = here & (np.array(t.mixture) == m)
        means[m] = (float(t.objective[sel].mean()), int(sel.sum()), t.shares[sel].mean(axis=0))
    top = max(means, key=lambda m: means[m][0])
    strat = None
    if STRATIFIED in means:
        mean, n, shares = means[STRATIFIED]
        strat = {
            "observed": mean,
            "trials": n,
            "predicted": float((model.predict(t.inputs(shares[None], rank)) @ t.weights)[0]),
        }
    return Proposal(
        rank=rank,
        shares=dict(zip(t.names, [round(float(v), 4) for v in best_x], strict=True)),
        predicted=predicted,
        interval=[predicted - half, predicted + half],
        kl=float(_kl(best_x[None], prior)[0]),
        best_observed={
            "mixture": top,
            "observed": means[top][0],
            "trials": means[top][1],
            "shares": dict(zip(t.names, [round(float(v), 4) for v in means[top][2]], strict=True)),
        },
        stratified=strat,
    )


def _softmax(theta: np.ndarray) -> np.ndarray:
    e = np.exp(theta - theta.max())
    return e / e.sum()


def _kl(shares: np.ndarray, prior: np.ndarray) -> np.ndarray:
    p = np.clip(shares, 1e-12, 1.0)
    return np.sum(
        np.where(shares > 0, shares * np.log(p / np.clip(prior, 1e-12, 1.0)), 0.0), axis=1
    )
