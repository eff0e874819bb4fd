"""An application that knows nothing about OpenTelemetry or otel-ml: sklearn and torch predictions.

Run unmodified under ``opentelemetry-instrument``; prints one JSON line with what it predicted, so the test
can compare it with what arrived at the OTLP receiver.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn


def main() -> int:
    x, y = load_iris(return_X_y=True)
    forest = RandomForestClassifier(n_estimators=10, random_state=0).fit(x, y)
    search = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression()), {"logisticregression__C": [0.1, 1]})
    search.fit(x, y)  # 10 cross-validation fits and scorings: training, not predictions
    pipe = search.best_estimator_

    labels = forest.predict(x[:30])
    proba = pipe.predict_proba(x[30:50])

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    with torch.no_grad():
        logits = net(torch.tensor(x[:40], dtype=torch.float32))
    net.train()
    net(torch.tensor(x[:5], dtype=torch.float32))  # training mode: not a prediction

    values, counts = np.unique(labels, return_counts=True)
    print(
        json.dumps(
            {
                "forest_classes": {str(v): int(c) for v, c in zip(values, counts, strict=True)},
                "pipe_confidence_sum": float(proba.max(axis=1).sum()),
                "net_confidence_sum": float(torch.softmax(logits, dim=1).max(dim=1).values.sum()),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
