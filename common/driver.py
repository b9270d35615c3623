"""In-process driver: the protocol without Flower.

It is the reference that the Flower run must match, and the fast path for tests
and sweeps. Every message still goes through the protocol objects and the
ledger, exactly as in the federated runtime.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd
from tqdm.auto import tqdm

from common.access_point import AccessPoint, access_point_class
from common.experiment import AlignmentProblem, ExperimentConfig
from common.overhead import DOWN, UP, Ledger
from common.results import HISTORY_COLUMNS, RunInfo, history_row, result_rows
from common.user import User


@dataclass
class ExperimentResult:
    history: pd.DataFrame  # one row per training round
    results: pd.DataFrame  # one row per user (RESULT_COLUMNS)
    access_point: AccessPoint
    users: list[User]
    ledger: Ledger


def build_parties(problem: AlignmentProblem, config: ExperimentConfig):
    """The AP and users of one run, with every random draw fixed by ``config.seed``."""
    users = [User(k, data, config.link, config.seed) for k, data in enumerate(problem.users)]
    ap = access_point_class(config.method)(
        problem.ap_pilots,
        problem.ap_test,
        config.link,
        list(range(len(users))),
        rounds=config.rounds,
        rho=config.rho,
        seed=config.seed,
    )
    return ap, users


def run_info(
    config: ExperimentConfig, dataset: str, ap_model: str, user_models: list[str], ap: AccessPoint
) -> RunInfo:
    """What the results table says about a run; the AP knows all of it without user data."""
    return RunInfo(
        method=config.method,
        dataset=dataset,
        seed=config.seed,
        ap_model=ap_model,
        latent_dim_ap=ap.dim,
        user_models=dict(enumerate(user_models)),
        link=config.link,
        pilot_fraction=config.pilot_fraction,
        n_pilots=ap.n_pilots,
        rounds=ap.num_rounds,
    )


def run_experiment(
    problem: AlignmentProblem, config: ExperimentConfig, *, progress: bool = False
) -> ExperimentResult:
    """Train for ``config.rounds`` rounds (one for First-K/Top-K), then evaluate every user."""
    start = time.perf_counter()
    ap, users = build_parties(problem, config)
    ids = [u.index for u in users]
    ledger = Ledger()
    history = []
    ap_metrics: dict[str, float] = {}
    bar = tqdm(range(1, ap.num_rounds + 1), desc=config.method, disable=not progress)
    for rnd in bar:
        round_start = time.perf_counter()
        downlink = ap.train_messages(ids)
        ledger.record("train", rnd, DOWN, downlink)
        replies, metrics = {}, {}
        for k, message in downlink.items():
            replies[k], metrics[k] = users[k].train(message)
        ledger.record("train", rnd, UP, replies)
        ap_metrics = ap.update(replies)
        row = history_row(rnd, ap_metrics, metrics, 0, ledger, ap.whitening_loading)
        history.append({**row, "seconds": time.perf_counter() - round_start})
        bar.set_postfix(residual=f"{ap_metrics['primal_residual']:.3g}")
    test = ap.test_messages(ids)
    ledger.record("evaluate", 0, DOWN, test)
    evaluation = {k: users[k].evaluate(message) for k, message in test.items()}
    info = run_info(config, problem.dataset, problem.ap_model, [u.name for u in problem.users], ap)
    results = result_rows(info, evaluation, ap_metrics, ledger, time.perf_counter() - start)
    return ExperimentResult(
        history=pd.DataFrame(history, columns=[*HISTORY_COLUMNS, "seconds"]),
        results=results,
        access_point=ap,
        users=users,
        ledger=ledger,
    )
