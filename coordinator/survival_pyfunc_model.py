"""The registered MLflow model of a time-to-event study (models-from-code; ``fedmath/`` shipped beside it).

For each case (one row of the model's features, by name): the linear predictor (x − centre)·β and the risk of
the event by each horizon, 1 − exp(−H(t*)·exp(linear predictor)), both from :class:`fedmath.survival.CoxModel`,
the very class the study validated (coefficients, centre and carried baseline on the features' own scale).
Output columns: ``linear_predictor`` and ``risk_<t*>`` per horizon (``risk_365``), in the study's time unit.
Every row is predicted on its own. Missing or non-finite features are refused with the column and row named.
Imports only numpy, pandas, mlflow and fedmath.
"""

import json

import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

from fedmath.model_input import feature_matrix
from fedmath.survival import CoxModel


def risk_column(horizon: float) -> str:
    return f"risk_{horizon:g}"


class FedradvalSurvivalModel(PythonModel):
    def load_context(self, context):
        with open(context.artifacts["config"]) as fh:
            self.cfg = json.load(fh)
        self.model = CoxModel.from_dict(self.cfg["model"])
        self.horizons = [float(h) for h in self.cfg["horizons"]]

    def predict(self, context, model_input, params=None):
        frame = pd.DataFrame(model_input)
        x = feature_matrix(frame, list(self.model.features))
        predicted = self.model.predict(x, self.horizons)
        out = {"linear_predictor": predicted["linear_predictor"]}
        for j, horizon in enumerate(self.horizons):
            out[risk_column(horizon)] = predicted["risk"][:, j]
        return pd.DataFrame(out, index=frame.index)


set_model(FedradvalSurvivalModel())
