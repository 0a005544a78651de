"""The registered MLflow model (models-from-code): this file is logged as the model's code, with ``fedmath/``
shipped beside it (``code_paths``), so the model runs exactly the functions the study ran.

For each case (one row of the model's features, by name): standardise with the study's mean and SD of the
final model, forward pass (:func:`fedmath.network.predict_proba`) → ``p_raw``; the study's recalibration map
(:func:`fedmath.logistic.recalibrate`, method and parameter vector as the sites applied them) → ``p``;
class-conditional conformal sets on ``p_raw``, the scale on which the thresholds were found and the coverage
was measured (:func:`fedmath.conformal.prediction_sets`). Every row is predicted on its own: a patient's output
never depends on the other rows of the request. Missing or non-finite features are refused with the column
and row named. Imports only numpy, pandas, mlflow and fedmath.
"""

import json

import numpy as np
import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

from fedmath.conformal import prediction_sets
from fedmath.logistic import recalibrate
from fedmath.model_input import feature_matrix
from fedmath.network import predict_proba


class FedradvalModel(PythonModel):
    def load_context(self, context):
        with open(context.artifacts["config"]) as fh:
            self.cfg = json.load(fh)
        with np.load(context.artifacts["weights"], allow_pickle=False) as w:
            self.params = [w[f"P{i}"] for i in range(self.cfg["n_params"])]
            self.mean, self.scale = w["mean"], w["scale"]
            self.recal = w["recal"]

    def predict(self, context, model_input, params=None):
        frame = pd.DataFrame(model_input)
        x = feature_matrix(frame, self.cfg["features"])
        p_raw = predict_proba(self.params, (x - self.mean) / self.scale)
        out = {"p_raw": p_raw, "p": recalibrate(p_raw, self.cfg["recalibration"], self.recal)}
        if self.cfg["q_neg"] is not None and self.cfg["q_pos"] is not None:
            out["in_set_negative"], out["in_set_positive"] = prediction_sets(p_raw, self.cfg["q_neg"], self.cfg["q_pos"])
        return pd.DataFrame(out, index=frame.index)


set_model(FedradvalModel())
