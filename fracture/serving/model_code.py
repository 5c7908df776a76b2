"""The registered pyfunc's code, logged as MLflow "models from code" (no pickled Python object in the registry).

MLflow copies this file into the logged model as `model_code.py` and runs it to build the pyfunc at load time.
`fracture.registry.verify` refuses a registered model whose copy differs from this installed file, so loading a
verified model only ever runs the installed package's code. The network itself is rebuilt from the model dir's
`model.pt` (a plain state dict, `weights_only=True`) after its sha256 matches the registered fingerprint.
"""

import mlflow.models

from fracture.serving.pyfunc import FracturePyfunc

mlflow.models.set_model(FracturePyfunc())
