"""An unmodified XGBoost + LightGBM + ONNX Runtime script: no OpenTelemetry, no otel-ml (zero-code test)."""

import json

import lightgbm
import numpy as np
import onnxruntime
import xgboost
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_breast_cancer

x, y = load_breast_cancer(return_X_y=True)
x = x[:, :10].astype(np.float32)

clf = xgboost.XGBClassifier(n_estimators=10, max_depth=3).fit(x, y)
clf.predict_proba(x[:25])

booster = lightgbm.train(
    {"objective": "binary", "verbose": -1, "num_leaves": 7}, lightgbm.Dataset(x, y), num_boost_round=10
)
booster.predict(x[:35])

w = np.random.default_rng(0).normal(size=(10, 2)).astype(np.float32)
graph = helper.make_graph(
    [
        helper.make_node("Gemm", ["input", "W", "B"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["probabilities"], axis=1),
    ],
    "cancer_onnx",
    [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 10])],
    [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])],
    [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.zeros(2, np.float32), "B")],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
model.ir_version = 8
session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
session.run(None, {"input": x[:45]})
print(json.dumps({"xgboost": 25, "lightgbm": 35, "onnxruntime": 45}))
