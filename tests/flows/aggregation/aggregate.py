from typing import List

from promptflow.core import log_metric, tool


@tool
def aggregate(scores: List[float], answers: List[str], weights: List[float]) -> dict:
    total = sum(s * w for s, w in zip(scores, weights))
    accuracy = round(sum(scores) / len(scores), 4) if scores else 0.0
    log_metric(key="accuracy", value=accuracy)
    log_metric(key="count", value=len(scores))
    log_metric(key="weighted_total", value=round(total, 4))
    return {
        "scores": scores,
        "answers": answers,
        "weights": weights,
        "types": [type(scores).__name__, type(answers).__name__, type(weights).__name__],
    }
