"""The maths both halves of a federated algorithm, and the registered model, share: one home for each formula.

Pure numpy/scipy: no Flower, MLflow, torch, pyradiomics or I/O, so the registered MLflow model can ship and load it
(and tests can check it against independent references). Site code, coordinator code and the registered model
import from here; nothing here imports from ``site_client`` or ``coordinator``.
"""
