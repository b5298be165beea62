"""The model registry: register every trained model with its lineage, promote through a fair
gate, roll back, and audit the lineage of any version. (`pyfunc_model.py` is the logged model's
code, loaded by MLflow; it is not imported here.)"""
