"""Many federated Newton fits in lockstep: one message round evaluates every unfinished model at once.

Each model runs :func:`fedmath.survival.newton_maximise` unchanged (the one home of the Newton iteration) in its
own thread; its ``evaluate(beta)`` posts beta and waits. When every unfinished model has posted (or finished),
the coordinator sends all posted betas in one round and hands each model its summed terms. Each fit therefore
sees exactly the sequence of evaluations it would see alone: the result equals a sequential fit, while the
number of rounds is the largest number of evaluations of any one model, not their sum. If a round fails
(a site left), every waiting fit is stopped and the failure is raised after all threads have ended.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Mapping

import numpy as np

from fedmath.survival import CoxFit, CoxTerms, newton_maximise


class _Stopped(Exception):
    """Raised inside a waiting fit when the round it waits for failed."""


def lockstep_newton(
    n_parameters: Mapping[str, int],
    ridge: float,
    evaluate_round: Callable[[dict[str, np.ndarray]], dict[str, CoxTerms]],
) -> dict[str, CoxFit | Exception]:
    """{model: its fit, or the exception its fit raised}; ``evaluate_round({model: beta})`` is one round."""
    posted: queue.Queue = queue.Queue()
    answers = {model: queue.Queue(maxsize=1) for model in n_parameters}

    def ask(model: str, beta: np.ndarray) -> CoxTerms:
        posted.put(("ask", model, np.array(beta, dtype=float)))
        answer = answers[model].get()
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def work(model: str, p: int) -> None:
        try:
            result: object = newton_maximise(lambda beta: ask(model, beta), p, ridge)
        except Exception as exc:  # noqa: BLE001 - reported per model (e.g. monotone likelihood)
            result = exc
        posted.put(("done", model, result))

    threads = [threading.Thread(target=work, args=(m, p), daemon=True, name=f"newton {m}")
               for m, p in n_parameters.items()]
    for thread in threads:
        thread.start()
    running, results = set(n_parameters), {}
    failure: BaseException | None = None
    try:
        while running:
            asked: dict[str, np.ndarray] = {}
            while len(asked) < len(running):
                kind, model, value = posted.get()
                if kind == "done":
                    running.discard(model)
                    results[model] = value
                else:
                    asked[model] = value
            if not asked:
                break
            try:
                terms = evaluate_round(asked)
            except BaseException as exc:
                failure = exc
                for model in asked:
                    answers[model].put(_Stopped())
                while running:  # every fit now ends (stopped or finished)
                    kind, model, _ = posted.get()
                    if kind == "done":
                        running.discard(model)
                break
            for model in asked:
                answers[model].put(terms[model])
    finally:
        for thread in threads:
            thread.join(timeout=60)
    if failure is not None:
        raise failure
    return results
